"""The local stack itself: HTTP front, gateway refusals, the real authorizer, moto resources, scripts."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import IO, Any
from uuid import UUID, uuid4

import pytest

from billing import resource_names as names
from billing.auth.tokens import (
    DEMO_SUBJECT,
    DEMO_TENANT_ID,
    LOCAL_ISSUER,
    LOCAL_TOKEN_SETTINGS,
    Principal,
    TokenSettings,
    issue_token,
    parse_token_settings,
    verify_token,
)
from billing.db.connection_provider import role_url_variable
from billing.db.roles import RUNTIME_ROLES, login_url
from billing.local.api_gateway import method_arn, policy_allows
from billing.paths import REPO_ROOT
from billing.resource_names import FunctionName
from billing.webhooks.secrets import parse_secret_value, webhook_secrets_from_env
from tests.e2e.conftest import ENVIRONMENT_BEFORE_STACK, LocalApi

pytestmark = pytest.mark.e2e

EXECUTIONS = f"{names.API_BASE_PATH}/executions"
READY = re.compile(r"^billing API ready on http://127\.0\.0\.1:(?P<port>\d+)$")


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert (document["status"], document["code"]) == (status, code)
    return document


# --- HTTP and the gateway ---------------------------------------------------------------------------------------


def test_server_listens_on_loopback_and_answers_with_a_request_id(local_stack: LocalApi) -> None:
    response = local_stack.request("GET", f"{names.API_BASE_PATH}/nothing-here")

    assert local_stack.base_url.startswith("http://127.0.0.1:")
    _problem(response, 404, "route_not_found")
    assert UUID(response.headers["x-amzn-RequestId"])


def test_authorized_route_without_token_is_401(local_stack: LocalApi) -> None:
    response = local_stack.request("POST", EXECUTIONS, json={"amount": 100})

    _problem(response, 401, "unauthenticated")


@pytest.mark.parametrize(
    "token",
    [
        issue_token(TokenSettings(LOCAL_ISSUER, ("not-the-dev-key-but-long-enough-1234",)), DEMO_TENANT_ID, "x"),
        issue_token(LOCAL_TOKEN_SETTINGS, DEMO_TENANT_ID, "x", now=datetime.now(UTC) - timedelta(days=1)),
        "garbage",
    ],
    ids=["wrong-key", "expired", "garbage"],
)
def test_authorized_route_with_an_invalid_token_is_401(local_stack: LocalApi, token: str) -> None:
    _problem(local_stack.request("GET", EXECUTIONS, token=token), 401, "unauthenticated")


def test_valid_dev_token_passes_the_authorizer(local_stack: LocalApi) -> None:
    response = local_stack.request("GET", f"{EXECUTIONS}?limit=1", token=local_stack.token())

    assert response.status not in (401, 403), response.text
    if response.headers["Content-Type"] == "application/problem+json":
        assert response.json()["code"] != "authorizer_failed", response.text


def test_real_authorizer_reads_the_jwt_secret_from_moto(local_stack: LocalApi) -> None:
    tenant = uuid4()
    token = local_stack.token(tenant, "carol")
    arn = method_arn("GET", EXECUTIONS)

    answer = local_stack.stack.invoke(
        FunctionName.AUTHORIZER, {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": arn}
    )

    assert answer["context"] == {"tenant_id": str(tenant), "subject": "carol"}
    assert policy_allows(answer["policyDocument"], arn)


def test_unknown_route_is_404_and_wrong_method_is_405(local_stack: LocalApi) -> None:
    _problem(local_stack.request("GET", "/"), 404, "route_not_found")
    response = local_stack.request("PUT", EXECUTIONS, token=local_stack.token())
    _problem(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, POST"


def test_oversized_body_is_413_by_the_routes_own_limit(local_stack: LocalApi) -> None:
    small = b"x" * (names.MAX_REQUEST_BODY_BYTES + 1)
    webhook = f"{names.API_BASE_PATH}/webhook/stripe"

    _problem(local_stack.request("POST", EXECUTIONS, body=small, token=local_stack.token()), 413, "payload_too_large")
    # Webhooks take what providers send: over the API's limit the body still reaches verification.
    _problem(local_stack.request("POST", webhook, body=small), 401, "signature_invalid")
    large = b"x" * (names.MAX_WEBHOOK_BODY_BYTES + 1)
    _problem(local_stack.request("POST", webhook, body=large), 413, "payload_too_large")


def test_oversized_chunked_body_is_413(local_stack: LocalApi) -> None:
    chunks = (b"y" * 4096 for _ in range(names.MAX_REQUEST_BODY_BYTES // 4096 + 2))
    connection = local_stack.connection()
    try:
        connection.request("POST", EXECUTIONS, body=chunks, encode_chunked=True)
        response = connection.getresponse()
        status, content = response.status, json.loads(response.read())
    finally:
        connection.close()

    assert (status, content["code"]) == (413, "payload_too_large")


def test_connection_is_kept_alive_between_requests(local_stack: LocalApi) -> None:
    connection = local_stack.connection()
    try:
        statuses = []
        for _ in range(3):
            connection.request("GET", "/nope")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        assert statuses == [404, 404, 404]
    finally:
        connection.close()


def test_webhook_route_is_not_behind_the_authorizer(local_stack: LocalApi) -> None:
    response = local_stack.request("POST", f"{names.API_BASE_PATH}/webhook/sandbox", json={"type": "ping"})

    if response.headers["Content-Type"] == "application/problem+json":
        assert response.json()["code"] != "unauthenticated", response.text


# --- AWS resources in moto --------------------------------------------------------------------------------------


def test_event_bus_forwards_billing_events_to_the_tap_queue(local_stack: LocalApi) -> None:
    events, sqs = local_stack.stack.client("events"), local_stack.stack.client("sqs")
    marker = str(uuid4())
    assert events.describe_event_bus(Name=names.EVENT_BUS_NAME)["Name"] == names.EVENT_BUS_NAME

    events.put_events(
        Entries=[
            {
                "EventBusName": names.EVENT_BUS_NAME,
                "Source": names.EVENT_SOURCE,
                "DetailType": "billing.execution.created",
                "Detail": json.dumps({"marker": marker}),
            }
        ]
    )

    deadline = time.monotonic() + 10
    seen: list[str] = []
    while marker not in seen and time.monotonic() < deadline:
        received = sqs.receive_message(
            QueueUrl=local_stack.stack.resources.events_tap_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        seen += [json.loads(m["Body"])["detail"].get("marker", "") for m in received.get("Messages", [])]
    assert marker in seen


def test_retry_queue_redrives_to_the_dlq_after_the_configured_receive_count(local_stack: LocalApi) -> None:
    sqs, resources = local_stack.stack.client("sqs"), local_stack.stack.resources
    dlq_arn = sqs.get_queue_attributes(QueueUrl=resources.dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]

    attributes = sqs.get_queue_attributes(QueueUrl=resources.retry_queue_url, AttributeNames=["All"])["Attributes"]

    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == names.RETRY_MAX_RECEIVE_COUNT
    assert resources.retry_queue_url.endswith(f"/{names.RETRY_QUEUE_NAME}")
    assert resources.dlq_url.endswith(f"/{names.DEAD_LETTER_QUEUE_NAME}")


def test_settlement_and_reports_buckets_exist(local_stack: LocalApi) -> None:
    s3, resources = local_stack.stack.client("s3"), local_stack.stack.resources

    for prefix, bucket in (
        (names.SETTLEMENT_BUCKET_PREFIX, resources.settlement_bucket),
        (names.REPORTS_BUCKET_PREFIX, resources.reports_bucket),
    ):
        assert bucket == names.bucket_name(prefix, "123456789012", "eu-west-1")
        s3.head_bucket(Bucket=bucket)


def test_secrets_hold_the_dev_jwt_settings_and_the_webhook_secrets(local_stack: LocalApi) -> None:
    secrets = local_stack.stack.client("secretsmanager")

    jwt_secret = secrets.get_secret_value(SecretId=names.JWT_SECRET_NAME)
    assert jwt_secret["ARN"] == local_stack.stack.resources.jwt_secret_arn
    assert parse_token_settings(jwt_secret["SecretString"]) == LOCAL_TOKEN_SETTINGS
    for provider, expected in webhook_secrets_from_env(ENVIRONMENT_BEFORE_STACK).items():
        name = names.webhook_secret_name(provider)
        assert parse_secret_value(name, secrets.get_secret_value(SecretId=name)["SecretString"]) == expected


def test_functions_environment_names_the_created_resources(local_stack: LocalApi) -> None:
    resources = local_stack.stack.resources

    assert os.environ[names.ENV_EVENT_BUS_NAME] == names.EVENT_BUS_NAME
    assert os.environ[names.ENV_RETRY_QUEUE_URL] == resources.retry_queue_url
    assert os.environ[names.ENV_DLQ_URL] == resources.dlq_url
    assert os.environ[names.ENV_SETTLEMENT_BUCKET] == resources.settlement_bucket
    assert os.environ[names.ENV_REPORTS_BUCKET] == resources.reports_bucket
    assert os.environ[names.ENV_JWT_SECRET_ARN] == resources.jwt_secret_arn
    assert os.environ["AWS_ENDPOINT_URL"] == local_stack.stack.aws_endpoint_url
    # Each function gets its own role's URL, never the admin's the stack migrated with.
    assert "DATABASE_URL" not in os.environ
    for role in RUNTIME_ROLES:
        assert os.environ[role_url_variable(role)] == login_url(local_stack.stack.database_url, role)
    assert os.environ[names.ENV_POWERTOOLS_METRICS_NAMESPACE] == "Billing"


# --- periodic jobs ----------------------------------------------------------------------------------------------


def test_periodic_job_keeps_running_after_a_failure_until_cancelled(local_stack: LocalApi) -> None:
    calls: list[int] = []
    twice = threading.Event()

    def flaky() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        twice.set()

    job = local_stack.stack.every(0.02, "probe", flaky)
    try:
        assert twice.wait(timeout=10)
    finally:
        job.cancel()
    runs_after_cancel = len(calls)

    assert job.failures == 1
    assert job.runs == runs_after_cancel >= 2
    job.cancel()  # idempotent, and no run happens once cancelled
    assert len(calls) == runs_after_cancel


# --- scripts ----------------------------------------------------------------------------------------------------


def test_token_script_prints_only_a_token_for_the_given_tenant_and_subject() -> None:
    tenant = uuid4()

    out = subprocess.run(
        [sys.executable, "scripts/issue_token.py", "--tenant", str(tenant), "--sub", "dave"],
        cwd=REPO_ROOT,
        env=ENVIRONMENT_BEFORE_STACK,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout

    assert out.count("\n") == 1
    assert verify_token(out.strip(), LOCAL_TOKEN_SETTINGS) == Principal(tenant, "dave")


def test_token_script_defaults_to_the_demo_tenant() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/issue_token.py"],
        cwd=REPO_ROOT,
        env=ENVIRONMENT_BEFORE_STACK,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout

    assert verify_token(out.strip(), LOCAL_TOKEN_SETTINGS) == Principal(DEMO_TENANT_ID, DEMO_SUBJECT)


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))


def test_serve_script_prints_the_ready_line_serves_and_stops_on_ctrl_c(admin_db_url: str) -> None:
    env = {**ENVIRONMENT_BEFORE_STACK, "PORT": "0", "DATABASE_URL": admin_db_url}
    server = subprocess.Popen(
        [sys.executable, "scripts/serve.py"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stderr is not None
    stdout: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(server.stdout, stdout), daemon=True).start()
    stderr_lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(server.stderr, stderr_lines), daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        ready = None
        while ready is None and time.monotonic() < deadline and server.poll() is None:
            try:
                ready = READY.match(stdout.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        assert ready is not None, f"no ready line; stderr: {list(stderr_lines.queue)}"

        connection = http.client.HTTPConnection("127.0.0.1", int(ready["port"]), timeout=10)
        connection.request("GET", EXECUTIONS)
        assert connection.getresponse().status == 401
        connection.close()

        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert any(f"GET {EXECUTIONS} -> 401" in line for line in stderr_lines.queue)
