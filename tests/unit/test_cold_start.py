"""What a handler's cold start loads, and that deferring it kept tracing and metrics where Lambda traces.

Each case runs in a fresh interpreter (tests/fresh_interpreter.py): what an import pulls in, and whether Powertools'
Tracer talks to X-Ray, are decided once per process.
"""

from __future__ import annotations

import json
from uuid import uuid4

import pytest
from aws_lambda_powertools import Tracer

from billing.observability import tracing_enabled
from billing.resource_names import AUDITOR_SCOPE, METRICS_NAMESPACE, FunctionName, service_name
from tests.fresh_interpreter import HANDLERS, SETTINGS, TRACED, emf_metrics, lambda_handler_subsegment, run_handler
from tests.lambda_harness import EXECUTIONS_PATH, api_event, call, load_handler, response_json, set_function_environment

# Owned elsewhere and still importing their repositories at cold start (billing/settlement/wiring.py).
DATABASE_AT_IMPORT = {"migrate", "settlement_report", "settlement_api"}


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"LAMBDA_TASK_ROOT": "/var/task"},
        {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"},
        {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "false"},
        {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "1"},
        {"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"},
        {"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"},
        {"POWERTOOLS_TRACE_DISABLED": "false"},
    ],
)
def test_tracing_is_on_exactly_where_powertools_would_trace(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LAMBDA_TASK_ROOT", "POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL", "AWS_CHALICE_CLI_MODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    assert tracing_enabled() is not bool(Tracer._is_tracer_disabled())


@pytest.mark.parametrize("function", HANDLERS)
def test_importing_a_handler_with_tracing_off_loads_neither_the_xray_sdk_nor_boto3_nor_the_openapi_models(
    function: str,
) -> None:
    report, _ = run_handler(function)

    loaded = set(report["loaded"])
    assert not loaded & {"aws_xray_sdk.core", "boto3", "botocore.client"}
    assert "aws_lambda_powertools.event_handler.openapi.models" not in loaded  # only the OpenAPI document needs them
    if function not in DATABASE_AT_IMPORT:
        assert "psycopg" not in loaded  # the first request that needs the database brings it


@pytest.mark.parametrize("function", ["execute", "audit", "vault"])
def test_importing_an_api_handler_leaves_the_validation_machinery_to_the_first_request(function: str) -> None:
    report, _ = run_handler(function)

    assert "aws_lambda_powertools.event_handler.middlewares.openapi_validation" not in report["loaded"]


def test_importing_the_execute_handler_leaves_its_routes_services_to_the_first_request() -> None:
    report, _ = run_handler("execute")

    loaded = set(report["loaded"])
    assert not loaded & {"billing.services.refunds", "billing.risk.gate", "billing.services.execution_service"}


def test_importing_the_vault_handler_leaves_the_execution_api_models_alone() -> None:
    report, _ = run_handler("vault")

    # Only the OpenAPI document needs Problem from them; no vault request reads the execution API's models.
    assert "billing.api.resources" not in set(report["loaded"])


def test_an_init_paid_ahead_loads_what_the_first_request_needs_without_connecting() -> None:
    on_demand, _ = run_handler("execute", env={"AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand"})
    provisioned, _ = run_handler("execute", env={"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"})

    wanted = {
        "psycopg",
        "billing.services.execution_service",
        "billing.risk.gate",
        "billing.authentication.flow",
        "billing.services.refunds",
        "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
    }
    assert wanted <= set(provisioned["loaded"])
    assert not wanted & set(on_demand["loaded"])


@pytest.mark.parametrize("function", TRACED)
def test_in_lambda_every_traced_handler_records_its_invocation_with_the_xray_sdk(function: str) -> None:
    report, _ = run_handler(function, in_lambda=True)

    assert report["tracer_disabled"] is False
    assert report["provider"].startswith("aws_xray_sdk")
    # Powertools patches the SDK and the database driver, so AWS and SQL calls show as subsegments.
    assert {"botocore", "psycopg"} <= set(report["patched"])
    subsegment = lambda_handler_subsegment(report["segments"])
    assert subsegment["annotations"]["ColdStart"] is True
    assert subsegment["annotations"]["Service"] == service_name(FunctionName(function))
    assert subsegment["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"


def test_with_tracing_off_a_handler_invocation_records_nothing() -> None:
    report, _ = run_handler("execute", event={})

    assert report["tracer_disabled"] is True
    assert report["provider"] == "billing.observability"
    assert report["segments"] == []


WEBHOOK_EVENT = {
    "resource": "/api/v1/billing/webhook/{provider}",
    "path": "/api/v1/billing/webhook/sandbox",
    "httpMethod": "POST",
    "headers": {"Content-Type": "application/json", "Sandbox-Signature": "t=1,v1=00"},
    "multiValueHeaders": {"Content-Type": ["application/json"], "Sandbox-Signature": ["t=1,v1=00"]},
    "queryStringParameters": None,
    "multiValueQueryStringParameters": None,
    "pathParameters": {"provider": "sandbox"},
    "stageVariables": None,
    "requestContext": {"requestId": "req-webhook", "identity": {"sourceIp": "203.0.113.9"}},
    "body": json.dumps({"id": "evt_1", "type": "charge.succeeded"}),
    "isBase64Encoded": False,
}
# The signing secret, without Secrets Manager; the database stays unconfigured, so the audit write fails as well.
FAKE_SECRETS = """
class Secrets:
    def secrets_for(self, provider):
        return ("whsec_cold_start_test",)
handler.runtime._secrets = Secrets()
"""


@pytest.mark.parametrize("in_lambda", [True, False], ids=["in Lambda", "tracing off"])
def test_a_handler_still_emits_its_metrics_and_traces_what_it_did(in_lambda: bool) -> None:
    report, output = run_handler("webhook", event=WEBHOOK_EVENT, before_invoke=FAKE_SECRETS, in_lambda=in_lambda)

    metrics = emf_metrics(output)
    assert {"WebhookSignatureRejected", "AuditWriteFailed"} <= set(metrics)
    document = metrics["WebhookSignatureRejected"]
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == METRICS_NAMESPACE
    assert document["service"] == service_name(FunctionName.WEBHOOK)
    if in_lambda:
        assert lambda_handler_subsegment(report["segments"])["annotations"]["ColdStart"] is True


# Validation moved from the resolver to each route (so its machinery loads with the first request): every route
# must still validate, and a refused request must be the same problem answer as before, before any database use.
@pytest.mark.parametrize("function", ["execute", "audit", "vault"])
def test_every_route_of_a_handler_that_validates_per_route_validates(
    function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_function_environment(monkeypatch, FunctionName(function), SETTINGS)
    handler = load_handler(function)

    routes = [*handler.app._static_routes, *handler.app._dynamic_routes]  # Powertools keeps no public list
    assert routes
    assert all(route.enable_validation is True for route in routes), [r.rule for r in routes if not r.enable_validation]


@pytest.mark.parametrize(
    ("function", "method", "path", "query", "body", "field"),
    [
        ("execute", "POST", EXECUTIONS_PATH, None, {"amount": "ten"}, "amount"),
        ("execute", "GET", EXECUTIONS_PATH, {"limit": "0"}, None, "limit"),
        ("audit", "GET", "/api/v1/billing/audit/events", {"limit": "501"}, None, "limit"),
        ("audit", "GET", "/api/v1/billing/audit/proofs/1", {"tree_size": "0"}, None, "tree_size"),
        (
            "vault",
            "GET",
            "/api/v1/billing/payment-instruments",
            {"entity_contract_id": "c", "limit": "0"},
            None,
            "limit",
        ),
        ("vault", "POST", "/api/v1/billing/payment-instruments", None, {"type": "card"}, "entity_contract_id"),
    ],
)
def test_a_request_the_route_validation_refuses_is_a_422_problem_before_any_database_use(
    function: str,
    method: str,
    path: str,
    query: dict[str, str] | None,
    body: dict[str, str] | None,
    field: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_function_environment(monkeypatch, FunctionName(function), SETTINGS)
    for name in ("DATABASE_URL", "DATABASE_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)  # a request that reached the database would fail with a 500
    handler = load_handler(function)
    event = api_event(method, path, tenant_id=uuid4(), body=body, query=query)
    event["requestContext"]["authorizer"]["scopes"] = AUDITOR_SCOPE

    response = call(handler, event)

    assert response["statusCode"] == 422, response["body"]
    problem = response_json(response)
    assert problem["code"] == "validation_failed"
    assert field in json.dumps(problem["errors"])
