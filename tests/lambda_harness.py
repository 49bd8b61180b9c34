"""Load Lambda handlers as Lambda does (one module instance per container) and build API Gateway events."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import pytest
from psycopg.conninfo import conninfo_to_dict

from billing.db.roles import FUNCTION_ROLES, LOGIN_USERS
from billing.local.lambda_loader import load_handler
from billing.resource_names import METRICS_NAMESPACE, FunctionName, service_name

__all__ = [
    "EXECUTIONS_PATH",
    "FakeLambdaContext",
    "api_event",
    "call",
    "header",
    "load_handler",
    "post_execution",
    "response_json",
    "set_function_environment",
]


@dataclass
class FakeLambdaContext:
    function_name: str = "billing-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:billing-test"
    aws_request_id: str = "req-test"
    remaining_ms: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def api_event(
    method: str,
    path: str,
    *,
    tenant_id: UUID | None,
    body: str | bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    subject: str = "user-1",
) -> dict[str, Any]:
    """A REST API (v1) proxy event as API Gateway sends it after the authorizer accepted the caller."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, bytes):
        body = body.decode()
    authorizer = {"tenant_id": str(tenant_id), "subject": subject, "principalId": subject} if tenant_id else None
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": f"req-{uuid4()}",
            "stage": "test",
            "httpMethod": method,
            "path": path,
            "resourcePath": path,
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": authorizer,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def response_json(response: dict[str, Any]) -> Any:
    return json.loads(response["body"]) if response.get("body") else None


def header(response: dict[str, Any], name: str) -> str | None:
    for key, value in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower():
            return str(value[0])
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


EXECUTIONS_PATH = "/api/v1/billing/executions"


def set_function_environment(
    monkeypatch: pytest.MonkeyPatch, function: FunctionName, variables: Mapping[str, str]
) -> None:
    """The environment the CDK app gives `function` (Powertools settings) plus `variables`.

    A DATABASE_URL must log in as the function's own role (billing.db.roles.FUNCTION_ROLES): a handler test run
    with another role's privileges would prove nothing about the deployed function.
    """
    login = LOGIN_USERS.get(FUNCTION_ROLES[function])  # none for migrate: the admin, acting as the owner
    if "DATABASE_URL" in variables and login is not None:
        user = conninfo_to_dict(variables["DATABASE_URL"]).get("user")
        assert user == login.name, f"{function} connects as {login.name}, not {user}"
    for name, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": service_name(function),
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        **variables,
    }.items():
        monkeypatch.setenv(name, value)


def call(handler: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    """Invoke a handler module's lambda_handler as Lambda would."""
    result: dict[str, Any] = handler.lambda_handler(event, FakeLambdaContext())
    return result


def post_execution(
    handler: ModuleType, tenant: UUID | None, body: Any, key: str | None = "key-1", **kw: Any
) -> dict[str, Any]:
    """POST /executions with an Idempotency-Key header (omitted when key is None)."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    headers.update(kw.pop("headers", {}))
    return call(handler, api_event("POST", EXECUTIONS_PATH, tenant_id=tenant, body=body, headers=headers, **kw))
