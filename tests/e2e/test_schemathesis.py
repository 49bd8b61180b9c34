"""Schemathesis against the committed OpenAPI document, over HTTP through the local stack.

Every documented operation gets generated requests, valid and invalid (schemathesis' examples, coverage and fuzzing
phases, with NUL characters allowed in strings), sent with a valid dev token. Each response must: not be a 5xx,
have a documented status, content type, headers and schema, refuse what the schema says is invalid, and, when it
is an error, be application/problem+json with a stable code from our vocabulary.
"""

from __future__ import annotations

import json
import os
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from billing.api.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE
from billing.domain.errors import BillingError
from billing.paths import REPO_ROOT
from tests.e2e.conftest import LocalApi

pytestmark = pytest.mark.e2e

# Enough to reach every branch the schema describes a few times over; the whole module takes ~10 s on 2 cores.
MAX_EXAMPLES: Final = 100
# What the local gateway answers itself, before any function runs (billing.local.api_gateway).
GATEWAY_CODES: Final = frozenset(
    {"route_not_found", "method_not_allowed", "unauthenticated", "forbidden", "payload_too_large"}
)


def _codes(error: type[BillingError]) -> set[str]:
    return {error.code}.union(*(_codes(sub) for sub in error.__subclasses__()))


STABLE_CODES: Final = frozenset(_codes(BillingError) - {BillingError.code}) | GATEWAY_CODES

schema = schemathesis.openapi.from_path(REPO_ROOT / "docs" / "openapi.json")
# Unknown query parameters are ignored by design (never read as a tenant, say), not refused; the bearer token is
# sent with every request here, and `ignored_auth` checks what happens without one.
schema.config.generation.update(
    max_examples=MAX_EXAMPLES, allow_x00=True, allow_extra_parameters=False, with_security_parameters=False
)
# A generated body can outgrow the body limit; the gateway's 413 refuses it as surely as a 422 would.
rejection = schema.config.checks.negative_data_rejection
rejection.expected_statuses = [*rejection.expected_statuses, "413"]


def problem_details_on_errors(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """A 4xx is application/problem+json whose code is one of ours and whose status is the response's."""
    if response.status_code < 400:
        return None
    content_types = response.headers.get("content-type") or [""]
    assert content_types[0].split(";")[0] == PROBLEM_CONTENT_TYPE, f"error served as {content_types[0]!r}"
    problem: dict[str, Any] = json.loads(response.content)
    assert problem.get("code") in STABLE_CODES, f"unknown problem code {problem.get('code')!r}"
    assert problem["status"] == response.status_code, problem
    assert problem["type"] == f"{PROBLEM_TYPE_BASE}{problem['code']}", problem
    return True


CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    unsupported_method,
    problem_details_on_errors,
]


# Derandomized: `make test` gates every landing, so it explores the same examples each run (a failure reproduces
# exactly); HYPOTHESIS_RANDOM=1 explores afresh when hunting for new findings.
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=not os.environ.get("HYPOTHESIS_RANDOM"),
)
def test_api_conforms_to_its_openapi_document(case: Case[Any], local_stack: LocalApi) -> None:
    case.call_and_validate(
        base_url=local_stack.base_url,
        headers={"Authorization": f"Bearer {local_stack.token()}"},
        checks=CHECKS,
    )


def test_served_document_is_the_committed_one_schemathesis_tests(local_stack: LocalApi) -> None:
    served = local_stack.request("GET", "/api/v1/billing/openapi.json", token=local_stack.token())
    assert served.status == 200
    assert served.json() == json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "CONNECT", "PROPFIND"])
def test_method_no_route_has_is_405_problem_not_the_servers_501_page(local_stack: LocalApi, method: str) -> None:
    # Found by schemathesis' unsupported-method probes: http.server answered these with a 501 HTML page.
    response = local_stack.request(method, "/api/v1/billing/executions", token=local_stack.token())
    assert response.status == 405
    assert response.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == "method_not_allowed"
