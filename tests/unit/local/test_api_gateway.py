"""The local API Gateway: routes, proxy events, authorizer, limits and response mapping.

The route functions are tiny stand-ins written to tmp_path that echo what they received. The authorizer is the real
functions/authorizer/handler.py with only its Secrets Manager lookup replaced by the local dev settings. They run in
in-process containers (Isolation.THREAD), so the authorizer reaches this process's moto mock; how containers are kept
apart is tests/unit/local/test_containers.py's subject.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.auth.tokens import LOCAL_ISSUER, LOCAL_TOKEN_SETTINGS, TokenSettings, issue_token
from billing.local.api_gateway import (
    DEFAULT_MAX_CONTAINERS,
    HttpRequest,
    HttpResponse,
    Isolation,
    LocalApiGateway,
    LocalFunctions,
    LocalHttpServer,
    LocalLambdaContext,
    MethodNotAllowed,
    RouteNotFound,
    _read_chunked,
    body_limit,
    build_proxy_event,
    match_route,
    policy_allows,
    response_from_proxy_result,
)
from billing.local.stack import stage_concurrency
from billing.paths import REPO_ROOT
from billing.resource_names import FunctionName, Route

TENANT = UUID("6f1c2f7e-1111-4222-8333-944444444444")
EXECUTIONS = f"{names.API_BASE_PATH}/executions"
WEBHOOK = f"{names.API_BASE_PATH}/webhook"

# Echoes the event and the context back as JSON and appends one line per invocation to invocations.jsonl; the
# X-Stand-In request header picks a misbehaviour.
ECHO_HANDLER = """
import base64
import json
from pathlib import Path

INVOCATIONS = Path(__file__).parent / "invocations.jsonl"
(Path(__file__).parent / "imports.log").open("a").write("imported\\n")


def lambda_handler(event, context):
    with INVOCATIONS.open("a") as log:
        log.write(json.dumps(event) + "\\n")
    behaviour = (event.get("headers") or {}).get("X-Stand-In")
    if behaviour == "raise":
        raise RuntimeError("boom")
    if behaviour == "malformed":
        return {"statusCode": 200, "bodyy": "typo"}
    if behaviour == "binary":
        body = base64.b64encode(b"\\xff\\x00\\xfe").decode()
        headers = {"Content-Type": "application/pdf"}
        return {"statusCode": 200, "headers": headers, "body": body, "isBase64Encoded": True}
    if behaviour == "multi":
        return {
            "statusCode": 201,
            "headers": {"X-One": "1", "X-Both": "from-headers"},
            "multiValueHeaders": {"X-Both": ["m1", "m2"], "Set-Cookie": ["a=1", "b=2"]},
            "body": "",
        }
    context_seen = {
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
        "aws_request_id": context.aws_request_id,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Correlation-Id": "corr-from-function"},
        "body": json.dumps({"event": event, "context": context_seen}),
    }
"""

# The real authorizer, with the dev settings instead of a Secrets Manager lookup.
REAL_AUTHORIZER = f"""
import importlib.util
import sys

from billing.auth.tokens import LOCAL_TOKEN_SETTINGS

_path = {str(REPO_ROOT / "functions/authorizer/handler.py")!r}
_spec = importlib.util.spec_from_file_location(__name__ + "_real", _path)
real = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = real
_spec.loader.exec_module(real)
real.token_settings = lambda: LOCAL_TOKEN_SETTINGS
lambda_handler = real.lambda_handler
"""

DENYING_AUTHORIZER = """
def lambda_handler(event, context):
    return {
        "principalId": "someone",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": event["methodArn"]}],
        },
        "context": {"tenant_id": "x", "subject": "someone"},
    }
"""


def _write_functions(root: Path, authorizer_source: str) -> Path:
    for name, source in (("execute", ECHO_HANDLER), ("webhook", ECHO_HANDLER), ("authorizer", authorizer_source)):
        (root / name).mkdir(parents=True)
        (root / name / "handler.py").write_text(textwrap.dedent(source))
    return root


@pytest.fixture
def functions_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_credentials: str) -> Iterator[Path]:
    monkeypatch.setenv(names.ENV_JWT_SECRET_ARN, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt-AbCdEf")
    # The real authorizer sends each rejected token to the audit intake queue: moto's here.
    with mock_aws():
        sqs = boto3.client("sqs", region_name=aws_credentials)
        url = sqs.create_queue(QueueName=names.AUDIT_INTAKE_QUEUE_NAME)["QueueUrl"]
        monkeypatch.setenv(names.ENV_AUDIT_INTAKE_QUEUE_URL, url)
        yield _write_functions(tmp_path / "functions", REAL_AUTHORIZER)


@pytest.fixture
def gateway(functions_dir: Path) -> LocalApiGateway:
    return LocalApiGateway(LocalFunctions(functions_dir, isolation=Isolation.THREAD))


def _token(subject: str = "alice", tenant: UUID = TENANT) -> str:
    return issue_token(LOCAL_TOKEN_SETTINGS, tenant, subject)


def _request(
    method: str,
    path: str,
    *,
    query: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    token: str | None = None,
) -> HttpRequest:
    if token is not None:
        headers = (*headers, ("Authorization", f"Bearer {token}"))
    return HttpRequest(method, path, query, (("Host", "127.0.0.1:8080"), *headers), body, "10.1.2.3")


def _echo(response: HttpResponse) -> dict[str, Any]:
    assert response.status == 200, response.body
    echoed: dict[str, Any] = response.json()
    return echoed


def _invocations(functions_dir: Path, function: str = "execute") -> list[dict[str, Any]]:
    path = functions_dir / function / "invocations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_problem(response: HttpResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response.body
    assert response.header("Content-Type") == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    assert document["code"] == code
    assert document["type"].endswith(code)
    assert document["title"]
    assert document["detail"]
    return document


# --- the proxy event ------------------------------------------------------------------------------------------


def test_event_names_the_route_template_and_decoded_path_parameters(gateway: LocalApiGateway) -> None:
    event = _echo(gateway.handle(_request("GET", f"{EXECUTIONS}/exe%2D42", token=_token())))["event"]

    assert event["resource"] == f"{EXECUTIONS}/{{id}}"
    assert event["path"] == f"{EXECUTIONS}/exe%2D42"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"id": "exe-42"}
    assert event["requestContext"]["resourcePath"] == f"{EXECUTIONS}/{{id}}"
    assert event["requestContext"]["stage"] == "local"
    assert event["requestContext"]["identity"]["sourceIp"] == "10.1.2.3"
    assert UUID(event["requestContext"]["requestId"])


def test_event_without_query_path_parameters_or_body_has_nulls(gateway: LocalApiGateway) -> None:
    event = _echo(gateway.handle(_request("GET", EXECUTIONS, token=_token())))["event"]

    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False


def test_event_query_keeps_the_last_value_single_and_all_values_multi(gateway: LocalApiGateway) -> None:
    request = _request("GET", EXECUTIONS, query="status=paid&status=failed&limit=5&q=a%20b&empty=", token=_token())

    event = _echo(gateway.handle(request))["event"]

    assert event["queryStringParameters"] == {"status": "failed", "limit": "5", "q": "a b", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {
        "status": ["paid", "failed"],
        "limit": ["5"],
        "q": ["a b"],
        "empty": [""],
    }


def test_event_headers_keep_the_last_value_single_and_all_values_multi(gateway: LocalApiGateway) -> None:
    request = _request("GET", EXECUTIONS, headers=(("Accept", "text/plain"), ("Accept", "application/json")))

    event = _echo(gateway.handle(_request("GET", EXECUTIONS, headers=request.headers, token=_token())))["event"]

    assert event["headers"]["Accept"] == "application/json"
    assert event["multiValueHeaders"]["Accept"] == ["text/plain", "application/json"]
    assert event["headers"]["X-Forwarded-For"] == "10.1.2.3"
    assert event["headers"]["X-Forwarded-Proto"] == "http"


def test_event_utf8_body_is_passed_as_text(gateway: LocalApiGateway) -> None:
    body = json.dumps({"amount": 1250, "note": "café"}).encode()

    event = _echo(gateway.handle(_request("POST", EXECUTIONS, body=body, token=_token())))["event"]

    assert event["body"] == body.decode()
    assert event["isBase64Encoded"] is False


def test_event_non_utf8_body_is_base64_with_the_exact_bytes(gateway: LocalApiGateway) -> None:
    body = b'{"id":"evt_1"}\xff\xfe raw signed bytes'

    event = _echo(gateway.handle(_request("POST", f"{WEBHOOK}/stripe", body=body)))["event"]

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_lambda_context_names_the_function_and_matches_the_request_id(gateway: LocalApiGateway) -> None:
    echoed = _echo(gateway.handle(_request("GET", EXECUTIONS, token=_token())))

    context = echoed["context"]
    assert context["function_name"] == "billing-execute"
    assert context["invoked_function_arn"] == "arn:aws:lambda:eu-west-1:123456789012:function:billing-execute"
    assert context["aws_request_id"] == echoed["event"]["requestContext"]["requestId"]
    assert context["memory_limit_in_mb"] > 0
    assert 0 < context["remaining_ms"] <= 29_000


def test_build_proxy_event_request_time_uses_english_month_names() -> None:
    from datetime import UTC, datetime

    match = match_route("GET", EXECUTIONS)
    moment = datetime(2026, 3, 7, 8, 9, 10, 500_000, tzinfo=UTC)

    event = build_proxy_event(_request("GET", EXECUTIONS), match, request_id="r-1", now=moment)

    assert event["requestContext"]["requestTime"] == "07/Mar/2026:08:09:10 +0000"
    assert event["requestContext"]["requestTimeEpoch"] == int(moment.timestamp() * 1000)


# --- the authorizer -------------------------------------------------------------------------------------------


def test_authorized_route_gets_the_authorizer_context(gateway: LocalApiGateway) -> None:
    event = _echo(gateway.handle(_request("GET", EXECUTIONS, token=_token("bob"))))["event"]

    authorizer = event["requestContext"]["authorizer"]
    assert authorizer["tenant_id"] == str(TENANT)
    assert authorizer["subject"] == "bob"
    assert authorizer["principalId"] == "bob"


def test_missing_token_is_401_without_invoking_the_function(gateway: LocalApiGateway, functions_dir: Path) -> None:
    response = gateway.handle(_request("POST", EXECUTIONS, body=b"{}"))

    _assert_problem(response, 401, "unauthenticated")
    assert response.header("WWW-Authenticate") == 'Bearer realm="billing-api"'
    assert _invocations(functions_dir) == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + issue_token(TokenSettings(LOCAL_ISSUER, ("k" * 40,)), TENANT, "alice"),
        "Bearer not.a.jwt",
        "Basic dXNlcjpwYXNz",
    ],
    ids=["wrong-key", "garbage", "basic"],
)
def test_invalid_token_is_401_without_invoking_the_function(
    gateway: LocalApiGateway, functions_dir: Path, authorization: str
) -> None:
    response = gateway.handle(_request("GET", EXECUTIONS, headers=(("Authorization", authorization),)))

    _assert_problem(response, 401, "unauthenticated")
    assert _invocations(functions_dir) == []


def test_policy_that_denies_the_call_is_403(tmp_path: Path) -> None:
    functions = LocalFunctions(_write_functions(tmp_path / "functions", DENYING_AUTHORIZER), isolation=Isolation.THREAD)
    gateway = LocalApiGateway(functions)

    response = gateway.handle(_request("GET", EXECUTIONS, token=_token()))

    _assert_problem(response, 403, "forbidden")
    assert _invocations(tmp_path / "functions") == []


# Allows exactly the call it was asked about and counts its invocations, as a narrow policy would.
NARROW_AUTHORIZER = """
from pathlib import Path

CALLS = Path(__file__).parent / "calls.log"


def lambda_handler(event, context):
    with CALLS.open("a") as calls:
        calls.write(event["methodArn"] + "\\n")
    if event["authorizationToken"] == "Bearer refused":
        raise Exception("Unauthorized")
    return {
        "principalId": "someone",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}],
        },
        "context": {"tenant_id": "t", "subject": "someone"},
    }
"""


def test_authorizer_answer_is_cached_per_token_and_checked_against_each_call(tmp_path: Path) -> None:
    functions_dir = _write_functions(tmp_path / "functions", NARROW_AUTHORIZER)
    gateway = LocalApiGateway(LocalFunctions(functions_dir, isolation=Isolation.THREAD))
    token = (("Authorization", "Bearer cached"),)
    calls = functions_dir / "authorizer" / "calls.log"

    first = gateway.handle(_request("GET", EXECUTIONS, headers=token))
    again = gateway.handle(_request("GET", EXECUTIONS, headers=token))
    # The cached policy names the first call only: another method is refused without asking the authorizer again,
    # as in API Gateway (which is why the real authorizer's policy covers every route).
    other = gateway.handle(_request("POST", EXECUTIONS, headers=token, body=b"{}"))

    assert (first.status, again.status) == (200, 200)
    _assert_problem(other, 403, "forbidden")
    assert len(calls.read_text().splitlines()) == 1


def test_a_refused_token_is_not_cached(tmp_path: Path) -> None:
    functions_dir = _write_functions(tmp_path / "functions", NARROW_AUTHORIZER)
    gateway = LocalApiGateway(LocalFunctions(functions_dir, isolation=Isolation.THREAD))

    for _ in range(2):
        _assert_problem(
            gateway.handle(_request("GET", EXECUTIONS, headers=(("Authorization", "Bearer refused"),))),
            401,
            "unauthenticated",
        )

    assert len((functions_dir / "authorizer" / "calls.log").read_text().splitlines()) == 2


def test_webhook_route_needs_no_token_and_gets_no_authorizer_context(gateway: LocalApiGateway) -> None:
    event = _echo(gateway.handle(_request("POST", f"{WEBHOOK}/adyen", body=b"{}")))["event"]

    assert event["pathParameters"] == {"provider": "adyen"}
    assert "authorizer" not in event["requestContext"]


def test_policy_allows_honours_wildcards_and_an_explicit_deny() -> None:
    arn = "arn:aws:execute-api:eu-west-1:1:api/local/GET/api/v1/billing/executions"
    allow = {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "arn:aws:execute-api:eu-west-1:1:api/*"}
    deny = {"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": arn}

    assert policy_allows({"Statement": [allow]}, arn)
    assert not policy_allows({"Statement": [allow, deny]}, arn)
    assert not policy_allows({"Statement": [{**allow, "Resource": "arn:aws:execute-api:eu-west-1:1:other/*"}]}, arn)
    assert not policy_allows({"Statement": []}, arn)


# --- routing and limits ---------------------------------------------------------------------------------------


def test_unknown_route_is_404(gateway: LocalApiGateway, functions_dir: Path) -> None:
    _assert_problem(gateway.handle(_request("GET", "/api/v1/billing/nope", token=_token())), 404, "route_not_found")
    _assert_problem(gateway.handle(_request("GET", f"{EXECUTIONS}/")), 404, "route_not_found")
    assert _invocations(functions_dir) == []


def test_known_path_with_another_method_is_405_with_allow(gateway: LocalApiGateway) -> None:
    response = gateway.handle(_request("DELETE", f"{EXECUTIONS}/exe-1", token=_token()))

    _assert_problem(response, 405, "method_not_allowed")
    assert response.header("Allow") == "GET"


ROUTE_LIMITS = [
    pytest.param(EXECUTIONS, "execute", names.MAX_REQUEST_BODY_BYTES, id="execute"),
    pytest.param(f"{WEBHOOK}/gocardless", "webhook", names.MAX_WEBHOOK_BODY_BYTES, id="webhook"),
]


@pytest.mark.parametrize(("path", "function", "limit"), ROUTE_LIMITS)
def test_body_exactly_at_the_route_limit_reaches_the_function(
    gateway: LocalApiGateway, path: str, function: str, limit: int
) -> None:
    event = _echo(gateway.handle(_request("POST", path, body=b"x" * limit, token=_token())))["event"]

    assert len(event["body"]) == limit


@pytest.mark.parametrize(("path", "function", "limit"), ROUTE_LIMITS)
def test_body_one_byte_over_the_route_limit_is_413_without_invoking_the_function(
    gateway: LocalApiGateway, functions_dir: Path, path: str, function: str, limit: int
) -> None:
    response = gateway.handle(_request("POST", path, body=b"x" * (limit + 1), token=_token()))

    document = _assert_problem(response, 413, "payload_too_large")
    assert str(limit) in document["detail"]
    assert _invocations(functions_dir, function) == []


def test_execute_body_of_17_kib_is_413(gateway: LocalApiGateway, functions_dir: Path) -> None:
    response = gateway.handle(_request("POST", EXECUTIONS, body=b"{" + b" " * (17 * 1024) + b"}", token=_token()))

    _assert_problem(response, 413, "payload_too_large")
    assert _invocations(functions_dir, "execute") == []


def test_webhook_body_of_100_kib_reaches_the_function_unchanged(gateway: LocalApiGateway) -> None:
    # A GoCardless-sized batch: far over the execute API's limit, well under the webhook route's.
    body = json.dumps({"events": [{"id": f"EV{i:06d}", "action": "confirmed"} for i in range(2400)]}).encode()
    assert 100 * 1024 < len(body) < 105 * 1024

    event = _echo(gateway.handle(_request("POST", f"{WEBHOOK}/gocardless", body=body)))["event"]

    assert event["body"] == body.decode()


def test_webhook_body_of_2_mib_is_413(gateway: LocalApiGateway, functions_dir: Path) -> None:
    response = gateway.handle(_request("POST", f"{WEBHOOK}/stripe", body=b"x" * (2 * 1024 * 1024)))

    _assert_problem(response, 413, "payload_too_large")
    assert _invocations(functions_dir, "webhook") == []


def test_webhook_limit_follows_the_path_whatever_the_method(gateway: LocalApiGateway) -> None:
    # WAF's rules see the path, not the route: a 100 KiB GET to the webhook path passes the size rule, then 405.
    response = gateway.handle(_request("GET", f"{WEBHOOK}/stripe", body=b"x" * (100 * 1024)))

    _assert_problem(response, 405, "method_not_allowed")


def test_unknown_path_gets_the_default_limit(gateway: LocalApiGateway) -> None:
    body = b"x" * (names.MAX_REQUEST_BODY_BYTES + 1)

    _assert_problem(gateway.handle(_request("POST", "/api/v1/billing/nope", body=body)), 413, "payload_too_large")


def test_body_limit_of_a_path_is_its_most_specific_routes() -> None:
    routes = (
        Route("POST", "/things/{id}", FunctionName.WEBHOOK, authorized=False, max_body_bytes=1000),
        Route("POST", "/things/latest", FunctionName.EXECUTE, authorized=False, max_body_bytes=10),
    )

    assert body_limit("/things/latest", routes) == 10
    assert body_limit("/things/other", routes) == 1000
    assert body_limit("/elsewhere", routes) == names.MAX_REQUEST_BODY_BYTES


def test_every_webhook_route_accepts_more_than_the_execute_api() -> None:
    limits = {route.function: route.max_body_bytes for route in names.ROUTES}

    assert limits[FunctionName.WEBHOOK] == names.MAX_WEBHOOK_BODY_BYTES == 1024 * 1024
    assert all(r.max_body_bytes == 16 * 1024 for r in names.ROUTES if r.function is FunctionName.EXECUTE)


@pytest.mark.parametrize("limit", [0, names.API_GATEWAY_MAX_PAYLOAD_BYTES + 1])
def test_route_limit_outside_what_api_gateway_accepts_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        Route("POST", "/x", FunctionName.WEBHOOK, authorized=False, max_body_bytes=limit)


def test_match_route_prefers_a_literal_segment_over_a_parameter() -> None:
    routes = (
        Route("GET", "/things/{id}", FunctionName.EXECUTE, authorized=False),
        Route("GET", "/things/latest", FunctionName.WEBHOOK, authorized=False),
    )

    assert match_route("GET", "/things/latest", routes).route.function is FunctionName.WEBHOOK
    assert match_route("GET", "/things/other", routes).path_parameters == {"id": "other"}
    with pytest.raises(MethodNotAllowed):
        match_route("POST", "/things/latest", routes)
    with pytest.raises(RouteNotFound):
        match_route("GET", "/things", routes)


def test_every_declared_route_is_reachable() -> None:
    for route in names.ROUTES:
        path = route.path.replace("{id}", "e-1").replace("{provider}", "stripe")
        assert match_route(route.method, path).route == route


# --- responses ------------------------------------------------------------------------------------------------


def test_function_error_is_502(gateway: LocalApiGateway) -> None:
    response = gateway.handle(_request("GET", EXECUTIONS, headers=(("X-Stand-In", "raise"),), token=_token()))

    _assert_problem(response, 502, "function_error")


def test_malformed_proxy_result_is_502(gateway: LocalApiGateway) -> None:
    response = gateway.handle(_request("GET", EXECUTIONS, headers=(("X-Stand-In", "malformed"),), token=_token()))

    _assert_problem(response, 502, "malformed_function_response")


def test_missing_handler_is_502_function_not_deployed(gateway: LocalApiGateway, functions_dir: Path) -> None:
    (functions_dir / "webhook" / "handler.py").unlink()

    _assert_problem(gateway.handle(_request("POST", f"{WEBHOOK}/stripe", body=b"{}")), 502, "function_not_deployed")


def test_base64_result_body_is_decoded_to_bytes(gateway: LocalApiGateway) -> None:
    response = gateway.handle(_request("GET", EXECUTIONS, headers=(("X-Stand-In", "binary"),), token=_token()))

    assert response.status == 200
    assert response.body == b"\xff\x00\xfe"
    assert response.header("Content-Type") == "application/pdf"


def test_multi_value_headers_win_over_headers_of_the_same_name(gateway: LocalApiGateway) -> None:
    response = gateway.handle(_request("GET", EXECUTIONS, headers=(("X-Stand-In", "multi"),), token=_token()))

    assert response.status == 201
    assert [value for name, value in response.headers if name == "X-Both"] == ["m1", "m2"]
    assert [value for name, value in response.headers if name == "Set-Cookie"] == ["a=1", "b=2"]
    assert response.header("X-One") == "1"
    assert response.header("Content-Type") == "application/json"  # API Gateway's default


def test_every_response_carries_the_request_id(gateway: LocalApiGateway) -> None:
    echoed = _echo(gateway.handle(_request("GET", EXECUTIONS, token=_token())))
    refused = gateway.handle(_request("GET", "/nope"))

    assert refused.header("x-amzn-RequestId")
    assert echoed["event"]["requestContext"]["requestId"] != refused.header("x-amzn-RequestId")


def test_problem_carries_a_well_formed_caller_correlation_id(gateway: LocalApiGateway) -> None:
    supplied = gateway.handle(_request("GET", "/nope", headers=(("X-Correlation-Id", "order-77"),)))
    injected = gateway.handle(_request("GET", "/nope", headers=(("X-Correlation-Id", "bad id\nforged"),)))

    assert supplied.json()["correlation_id"] == "order-77"
    assert injected.json()["correlation_id"] == injected.header("x-amzn-RequestId")


@pytest.mark.parametrize(
    "result",
    [
        None,
        "ok",
        {"statusCode": "abc"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "multiValueHeaders": {"X": "not-a-list"}},
    ],
)
def test_response_from_proxy_result_refuses_what_api_gateway_refuses(result: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        response_from_proxy_result(result)


# --- containers and logs --------------------------------------------------------------------------------------


def test_handler_module_is_loaded_once_and_reused_while_warm(gateway: LocalApiGateway, functions_dir: Path) -> None:
    for _ in range(3):
        _echo(gateway.handle(_request("GET", EXECUTIONS, token=_token())))

    assert (functions_dir / "execute" / "imports.log").read_text().splitlines() == ["imported"]
    assert len(_invocations(functions_dir)) == 3


GATED_HANDLER = """
import uuid

import _unit_gate

CONTAINER = str(uuid.uuid4())


def lambda_handler(event, context):
    _unit_gate.barrier.wait(timeout=10)
    return CONTAINER
"""


def test_concurrent_invocations_run_in_separate_containers_that_stay_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reconcile").mkdir()
    (tmp_path / "reconcile" / "handler.py").write_text(GATED_HANDLER)
    # Both invocations must be inside the handler at once to pass the barrier: a shared container would deadlock.
    gate = types.SimpleNamespace(barrier=threading.Barrier(2))
    monkeypatch.setitem(sys.modules, "_unit_gate", gate)
    functions = LocalFunctions(tmp_path, isolation=Isolation.THREAD)
    seen: list[str] = []

    threads = [
        threading.Thread(target=lambda: seen.append(functions.invoke(FunctionName.RECONCILE, {}))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(set(seen)) == 2
    gate.barrier = threading.Barrier(1)
    assert functions.invoke(FunctionName.RECONCILE, {}) in seen  # warm: no third cold start


HELD_HANDLER = """
import _unit_hold


def lambda_handler(event, context):
    _unit_hold.entered.set()
    _unit_hold.release.wait(timeout=30)
    return {"statusCode": 200, "body": "held"}
"""


def test_a_function_at_its_concurrency_limit_answers_429_until_a_container_frees_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "webhook").mkdir()
    (tmp_path / "webhook" / "handler.py").write_text(HELD_HANDLER)
    hold = types.SimpleNamespace(entered=threading.Event(), release=threading.Event())
    monkeypatch.setitem(sys.modules, "_unit_hold", hold)
    functions = LocalFunctions(tmp_path, isolation=Isolation.THREAD, concurrency={FunctionName.WEBHOOK: 1})
    gateway = LocalApiGateway(functions, queue_seconds=0)
    held: list[HttpResponse] = []
    busy = threading.Thread(target=lambda: held.append(gateway.handle(_request("POST", f"{WEBHOOK}/sandbox"))))
    busy.start()
    assert hold.entered.wait(timeout=30)

    refused = gateway.handle(_request("POST", f"{WEBHOOK}/sandbox"))
    hold.release.set()
    busy.join(timeout=30)
    served = gateway.handle(_request("POST", f"{WEBHOOK}/sandbox"))

    _assert_problem(refused, 429, "throttled")
    assert refused.header("Retry-After") == "1"
    assert [r.status for r in held] == [200]
    assert served.status == 200


def test_concurrency_limits_follow_the_dev_stages_reserved_concurrency() -> None:
    functions = LocalFunctions(isolation=Isolation.THREAD, concurrency=stage_concurrency())

    assert functions.concurrency_limit(FunctionName.EXECUTE) == 10
    assert functions.concurrency_limit(FunctionName.RECONCILE) == 1
    assert functions.concurrency_limit(FunctionName.AUTHORIZER) == DEFAULT_MAX_CONTAINERS  # not reserved


def test_one_log_line_per_request_with_status_and_correlation_id(
    gateway: LocalApiGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="billing.local.api")

    gateway.handle(_request("GET", EXECUTIONS, token=_token()))
    gateway.handle(_request("GET", "/nope", headers=(("X-Correlation-Id", "order-77"),)))

    lines = [r.getMessage() for r in caplog.records if r.name == "billing.local.api" and " -> " in r.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith(f"GET {EXECUTIONS} -> 200 ")
    assert lines[0].endswith("correlation_id=corr-from-function")
    assert lines[1].startswith("GET /nope -> 404 ")
    assert lines[1].endswith("correlation_id=order-77")


def test_local_lambda_context_counts_down_to_zero() -> None:
    context = LocalLambdaContext("billing-execute", timeout_seconds=0.0)

    assert context.get_remaining_time_in_millis() == 0
    assert context.function_version == "$LATEST"
    assert context.log_group_name == "/aws/lambda/billing-execute"


# --- chunked request bodies -----------------------------------------------------------------------------------


def _chunked(*chunks: bytes) -> io.BufferedReader:
    encoded = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    return io.BufferedReader(io.BytesIO(encoded))


def test_chunked_body_within_the_limit_is_read_whole() -> None:
    assert _read_chunked(_chunked(b"hello ", b"world"), keep=100, drain_limit=1000) == (b"hello world", True)


def test_chunked_body_over_the_limit_is_cut_but_drained_so_the_connection_stays_usable() -> None:
    stream = _chunked(b"a" * 60, b"b" * 60)

    assert _read_chunked(stream, keep=101, drain_limit=1000) == (b"a" * 60 + b"b" * 41, True)
    assert stream.read() == b""


def test_chunked_body_over_the_drain_limit_is_abandoned() -> None:
    body, complete = _read_chunked(_chunked(b"a" * 60, b"b" * 60), keep=10, drain_limit=100)

    assert (body, complete) == (b"a" * 10, False)


# --- over HTTP --------------------------------------------------------------------------------------------------


@pytest.fixture
def http_gateway(gateway: LocalApiGateway) -> Iterator[LocalHttpServer]:
    server = LocalHttpServer(gateway, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    thread.join()
    server.server_close()


def _post(server: LocalHttpServer, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_server_reads_a_webhook_body_up_to_the_webhook_limit(
    http_gateway: LocalHttpServer, functions_dir: Path
) -> None:
    status, echoed = _post(http_gateway, f"{WEBHOOK}/gocardless", b"x" * (100 * 1024))

    assert status == 200
    assert len(echoed["event"]["body"]) == 100 * 1024


def test_server_answers_413_to_a_webhook_body_over_the_webhook_limit(
    http_gateway: LocalHttpServer, functions_dir: Path
) -> None:
    status, problem = _post(http_gateway, f"{WEBHOOK}/stripe", b"x" * (2 * 1024 * 1024))

    assert (status, problem["code"]) == (413, "payload_too_large")
    assert _invocations(functions_dir, "webhook") == []
