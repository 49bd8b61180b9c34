"""A tenant's risk rules through the real execute handler: the defaults, a replacement, refusals that store nothing."""

from __future__ import annotations

from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection
from billing.risk.defaults import default_rule_set
from tests.factories import count_rows
from tests.lambda_harness import api_event, call, header, response_json

pytestmark = pytest.mark.integration
RULES = "/api/v1/billing/risk/rules"
ONE_RULE = {
    "rules": [
        {
            "id": "block-big-eur",
            "description": "No card charge of EUR 5,000.00 or more",
            "action": "block",
            "score": 80,
            "applies_to": {"initiator": "any", "rails": ["card"]},
            "when": {"attribute": "amount", "op": "gte", "value": {"EUR": 500000}},
        }
    ]
}


def put(execute: ModuleType, tenant_id: UUID, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return call(execute, api_event("PUT", RULES, tenant_id=tenant_id, body=body, headers=headers))


def get(execute: ModuleType, tenant_id: UUID) -> dict[str, Any]:
    response = call(execute, api_event("GET", RULES, tenant_id=tenant_id))
    assert response["statusCode"] == 200, response["body"]
    body: dict[str, Any] = response_json(response)
    return body


def test_a_tenant_starts_with_the_defaults_then_replaces_them_version_by_version(
    execute: ModuleType, tenant_id: UUID
) -> None:
    defaults = get(execute, tenant_id)
    assert (defaults["version"], defaults["created_at"]) == (0, None)
    assert [r["id"] for r in defaults["rules"]] == [r.id for r in default_rule_set().rules]

    first = put(execute, tenant_id, ONE_RULE)
    assert first["statusCode"] == 200, first["body"]
    assert response_json(first)["version"] == 1
    second = put(execute, tenant_id, ONE_RULE, {"If-Match": "1"})
    assert response_json(second)["version"] == 2
    shown = get(execute, tenant_id)
    assert (shown["version"], [r["id"] for r in shown["rules"]]) == (2, ["block-big-eur"])
    assert shown["created_by"].startswith("user:")
    # Another tenant still has the defaults.
    assert get(execute, uuid4())["version"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rules": [{**ONE_RULE["rules"][0], "when": {"attribute": "shoe_size", "op": "gt", "value": 3}}]},
         "rules.0.when.attribute"),
        ({"rules": [{**ONE_RULE["rules"][0], "when": {"attribute": "amount", "op": "gte", "value": {"EUR": 10.5}}}]},
         "rules.0.when.value.EUR"),
        ({"rules": [ONE_RULE["rules"][0], ONE_RULE["rules"][0]]}, "rules.1.id"),
        ({"rules": [{**ONE_RULE["rules"][0], "action": "shrug"}]}, "rules.0.action"),
    ],
)  # fmt: skip
def test_a_bad_rule_set_is_422_naming_the_field_and_stores_nothing(
    execute: ModuleType, admin: Connection, tenant_id: UUID, body: dict[str, Any], field: str
) -> None:
    response = put(execute, tenant_id, body)
    assert response["statusCode"] == 422, response["body"]
    assert header(response, "Content-Type") == "application/problem+json"
    problem = response_json(response)
    assert problem["code"] == "validation_failed"
    assert field in [error["field"] for error in problem["errors"]]
    assert count_rows(admin, "risk_rule_sets", tenant_id) == 0


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "", '{"rules": "all of them"}'])
def test_a_body_that_is_no_rule_set_is_a_4xx_and_stores_nothing(
    execute: ModuleType, admin: Connection, tenant_id: UUID, body: str
) -> None:
    response = put(execute, tenant_id, body)
    assert 400 <= response["statusCode"] < 500, response["body"]
    assert count_rows(admin, "risk_rule_sets", tenant_id) == 0


def test_replacing_a_version_that_is_no_longer_current_is_409(execute: ModuleType, tenant_id: UUID) -> None:
    put(execute, tenant_id, ONE_RULE)
    stale = put(execute, tenant_id, ONE_RULE, {"If-Match": "0"})
    assert (stale["statusCode"], response_json(stale)["code"]) == (409, "risk_history_refused")
    bad = put(execute, tenant_id, ONE_RULE, {"If-Match": "v1"})
    assert bad["statusCode"] == 400
    assert get(execute, tenant_id)["version"] == 1
