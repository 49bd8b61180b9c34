"""The settlement reports API in AWS: its four routes reach the settlement_api function behind the token
authorizer, and the function is given the database (as billing_finance) and nothing else."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest

from billing import resource_names as names
from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, issue_token, scopes_of
from billing.db.roles import FUNCTION_ROLES, DatabaseRole
from billing.local.api_gateway import LocalLambdaContext, method_arn, policy_allows
from billing.paths import REPO_ROOT
from billing.resource_names import FunctionName, Route
from infra.functions import FUNCTIONS, Access
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

SETTLEMENT_ROUTES = [route for route in names.ROUTES if route.function is FunctionName.SETTLEMENT_API]


def _methods(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    service = synth.raw["service"]
    return {
        (method["Properties"]["HttpMethod"], cfn.api_path(service, method["Properties"]["ResourceId"]["Ref"])): method[
            "Properties"
        ]
        for method in cfn.of_type(service, "AWS::ApiGateway::Method").values()
    }


def test_the_settlement_route_family_is_the_one_in_resource_names() -> None:
    assert {(r.method, r.path.removeprefix(names.API_BASE_PATH)) for r in SETTLEMENT_ROUTES} == {
        ("GET", "/settlement-reports"),
        ("GET", "/settlement-reports/{id}"),
        ("GET", "/settlement-reports/{id}/discrepancies"),
        ("POST", "/settlement-reports/{id}/discrepancies/{discrepancy_id}/resolve"),
    }
    assert all(route.max_body_bytes == names.MAX_REQUEST_BODY_BYTES for route in SETTLEMENT_ROUTES)


@pytest.mark.parametrize("route", SETTLEMENT_ROUTES, ids=lambda route: f"{route.method} {route.path}")
def test_settlement_routes_reach_their_function_behind_the_token_authorizer(route: Route, dev: Synthesized) -> None:
    method = _methods(dev)[(route.method, route.path)]
    assert method["Integration"]["Type"] == "AWS_PROXY"
    targets = cfn.references(method["Integration"]["Uri"]) & set(
        cfn.of_type(dev.raw["service"], "AWS::Lambda::Function")
    )
    assert targets == {cfn.function_id(dev.raw["service"], FunctionName.SETTLEMENT_API)}
    (authorizer_id,) = cfn.of_type(dev.raw["service"], "AWS::ApiGateway::Authorizer")
    assert (method["AuthorizationType"], method["AuthorizerId"]) == ("CUSTOM", {"Ref": authorizer_id})


def test_the_function_gets_the_database_as_billing_finance_and_nothing_else(dev: Synthesized) -> None:
    spec = FUNCTIONS[FunctionName.SETTLEMENT_API]
    assert spec.accesses == frozenset({Access.DATABASE})
    assert spec.in_vpc
    assert FUNCTION_ROLES[FunctionName.SETTLEMENT_API] is DatabaseRole.FINANCE
    # No other function connects as the finance role.
    assert [f for f, role in FUNCTION_ROLES.items() if role is DatabaseRole.FINANCE] == [FunctionName.SETTLEMENT_API]
    env = cfn.function_props(dev.raw["service"], FunctionName.SETTLEMENT_API)["Environment"]["Variables"]
    assert set(env) == {
        names.ENV_POWERTOOLS_SERVICE_NAME,
        names.ENV_POWERTOOLS_METRICS_NAMESPACE,
        names.ENV_LOG_LEVEL,
        names.ENV_AUTHORITATIVE_WRITE_ENABLED,
        names.ENV_DATABASE_SECRET_ARN,
        names.ENV_DATABASE_PROXY_ENDPOINT,
        names.ENV_DATABASE_NAME,
    }
    actions = cfn.actions(dev.raw["service"], FunctionName.SETTLEMENT_API)
    assert not {a for a in actions if a.startswith(("s3:", "sqs:", "events:", "kms:GenerateDataKey"))}


@pytest.fixture
def authorizer(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The real authorizer handler, with only its Secrets Manager lookup replaced."""
    monkeypatch.setenv(names.ENV_JWT_SECRET_ARN, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt-AbCdEf")
    monkeypatch.setenv(names.ENV_AUDIT_INTAKE_QUEUE_URL, "https://sqs.eu-west-1.amazonaws.com/123456789012/unused")
    spec = importlib.util.spec_from_file_location(
        "_infra_settlement_authorizer_handler", REPO_ROOT / "functions/authorizer/handler.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "token_settings", lambda: LOCAL_TOKEN_SETTINGS)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_authorizer_hands_the_finance_scope_on_for_every_settlement_route(
    authorizer: ModuleType, dev: Synthesized
) -> None:
    # API Gateway reuses one decision per token across routes: the function, not the authorizer, must refuse a
    # token without the finance scope, so the scope has to reach it in the context.
    stage = dev.built.config.name
    token = issue_token(LOCAL_TOKEN_SETTINGS, UUID(int=9), "fin-1", scopes=[names.FINANCE_SCOPE])
    first = SETTLEMENT_ROUTES[0]
    event = {
        "type": "TOKEN",
        "authorizationToken": f"Bearer {token}",
        "methodArn": method_arn(first.method, first.path, stage=stage),
    }

    answer = authorizer.lambda_handler(event, LocalLambdaContext("billing-authorizer"))

    assert names.FINANCE_SCOPE in scopes_of(answer["context"]["scopes"])
    for route in SETTLEMENT_ROUTES:
        concrete = route.path.replace("{id}", str(UUID(int=1))).replace("{discrepancy_id}", str(UUID(int=2)))
        assert policy_allows(answer["policyDocument"], method_arn(route.method, concrete, stage=stage)), route
