"""functions/authorizer: the real handler module, with only the Secrets Manager lookup replaced; the audit intake
queue is moto's."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from uuid import UUID

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.auth.tokens import (
    LOCAL_ISSUER,
    LOCAL_TOKEN_SETTINGS,
    TokenSettings,
    issue_token,
    token_settings_secret_value,
)
from billing.local.api_gateway import LocalLambdaContext, method_arn, policy_allows
from billing.paths import REPO_ROOT

HANDLER = REPO_ROOT / "functions" / "authorizer" / "handler.py"
JWT_SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:billing/auth/jwt-AbCdEf"
TENANT = UUID("6f1c2f7e-1111-4222-8333-944444444444")
ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod/GET/api/v1/billing/executions/42"


@pytest.fixture
def intake_queue(aws_credentials: str) -> Iterator[tuple[Any, str]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=aws_credentials)
        yield sqs, sqs.create_queue(QueueName=names.AUDIT_INTAKE_QUEUE_NAME)["QueueUrl"]


@pytest.fixture
def authorizer(monkeypatch: pytest.MonkeyPatch, intake_queue: tuple[Any, str]) -> Iterator[ModuleType]:
    monkeypatch.setenv(names.ENV_JWT_SECRET_ARN, JWT_SECRET_ARN)
    monkeypatch.setenv(names.ENV_AUDIT_INTAKE_QUEUE_URL, intake_queue[1])
    spec = importlib.util.spec_from_file_location("_unit_authorizer_handler", HANDLER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "token_settings", lambda: LOCAL_TOKEN_SETTINGS)
    yield module
    sys.modules.pop(spec.name, None)


def _invoke(authorizer: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = authorizer.lambda_handler(event, LocalLambdaContext("billing-authorizer"))
    return result


def _token_event(authorization: str | None, arn: str = ARN) -> dict[str, Any]:
    return {"type": "TOKEN", "authorizationToken": authorization, "methodArn": arn}


def test_valid_token_is_allowed_with_tenant_and_subject_in_the_context(authorizer: ModuleType) -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice")

    answer = _invoke(authorizer, _token_event(f"Bearer {token}"))

    assert answer["principalId"] == "alice"
    # No scopes, no scopes key: routes that need one find none.
    assert answer["context"] == {"tenant_id": str(TENANT), "subject": "alice"}
    assert answer["policyDocument"]["Statement"] == [
        {
            "Action": "execute-api:Invoke",
            "Effect": "Allow",
            "Resource": "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod/*/api/v1/billing/*",
        }
    ]


def test_allow_policy_covers_every_authorized_route_of_the_api_but_no_other_api(authorizer: ModuleType) -> None:
    # API Gateway caches the answer per token and reuses it for every route, so one policy must cover them all.
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice")
    policy = _invoke(authorizer, _token_event(f"Bearer {token}"))["policyDocument"]

    for route in names.ROUTES:
        path = route.path.replace("{id}", "0b9c").replace("{provider}", "stripe").replace("{seq}", "7")
        assert policy_allows(policy, method_arn(route.method, path, api_id="abc123", stage="prod")), route
    assert not policy_allows(policy, method_arn("GET", "/api/v1/billing/executions", api_id="other", stage="prod"))
    assert not policy_allows(policy, method_arn("GET", "/api/v1/billing/executions", api_id="abc123", stage="dev"))


def test_request_authorizer_event_reads_the_authorization_header_in_any_case(authorizer: ModuleType) -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "bob")
    event = {"type": "REQUEST", "methodArn": ARN, "headers": {"authorization": f"Bearer {token}"}}

    assert _invoke(authorizer, event)["context"]["subject"] == "bob"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer " + issue_token(TokenSettings(LOCAL_ISSUER, ("k" * 40,)), TENANT, "alice"),
        "Bearer " + issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice", now=datetime.now(UTC) - timedelta(days=1)),
    ],
    ids=["missing", "empty", "basic", "garbage", "wrong-key", "expired"],
)
def test_rejected_token_raises_the_exact_unauthorized_error(authorizer: ModuleType, authorization: str | None) -> None:
    # API Gateway answers 401 only for this exact message; any other error becomes a 500.
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _invoke(authorizer, _token_event(authorization))


def test_rejection_logs_the_reason_but_never_the_token(
    authorizer: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice", now=datetime.now(UTC) - timedelta(days=1))

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _invoke(authorizer, _token_event(f"Bearer {token}"))

    assert [getattr(record, "reason", None) for record in caplog.records] == ["expired"]
    assert token not in caplog.text


def test_scopes_reach_the_route_as_one_space_separated_context_value(authorizer: ModuleType) -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "carol", scopes=["auditor", "billing:read"])

    assert _invoke(authorizer, _token_event(f"Bearer {token}"))["context"]["scopes"] == "auditor billing:read"


def test_a_rejected_token_is_an_audit_line_for_pci_10_2_1_4(
    authorizer: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _invoke(authorizer, _token_event("Bearer not-a-jwt"))

    (record,) = caplog.records
    audit = getattr(record, "audit", None)
    assert isinstance(audit, dict)
    assert (audit["event_type"], audit["outcome"], audit["actor"]) == ("auth.failed", "denied", "anonymous")
    assert audit["resource_id"] == "GET/api/v1/billing/executions/42"
    assert audit["details"] == {"reason": "malformed"}
    assert audit["pci_dss"] == ["10.2.1.4"]
    assert "not-a-jwt" not in caplog.text


def test_token_settings_come_from_the_jwt_secret(monkeypatch: pytest.MonkeyPatch, authorizer: ModuleType) -> None:
    monkeypatch.undo()  # the real token_settings, with a stand-in for Secrets Manager
    monkeypatch.setenv(names.ENV_JWT_SECRET_ARN, JWT_SECRET_ARN)
    settings = TokenSettings("billing", ("r" * 40, "s" * 40))
    asked: list[tuple[str, int]] = []

    class Secrets:
        def get(self, name: str, max_age: int) -> str:
            asked.append((name, max_age))
            return token_settings_secret_value(settings)

    monkeypatch.setattr(authorizer, "_secrets", Secrets)

    assert authorizer.token_settings() == settings
    assert asked == [(JWT_SECRET_ARN, authorizer.SECRET_MAX_AGE_SECONDS)]


def _queued(intake_queue: tuple[Any, str]) -> list[str]:
    sqs, url = intake_queue
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    return [m["Body"] for m in messages]


def test_rejected_token_sends_one_intake_message_without_the_token(
    authorizer: ModuleType, intake_queue: tuple[Any, str]
) -> None:
    # Given a token for alice signed with a key the API does not know
    token = issue_token(TokenSettings(LOCAL_ISSUER, ("k" * 40,)), TENANT, "alice")

    # When the authorizer rejects it
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _invoke(authorizer, _token_event(f"Bearer {token}"))

    # Then exactly one message says who it claimed to be and why it failed, and holds nothing of the token
    (body,) = _queued(intake_queue)
    assert token not in body
    assert token.split(".")[2] not in body
    message = json.loads(body)
    assert set(message) == {
        "event_type",
        "reason",
        "source_ip",
        "claimed_subject",
        "claimed_tenant_id",
        "request_id",
        "occurred_at",
    }
    assert (message["event_type"], message["reason"]) == ("auth.failed", "signature_mismatch")
    assert (message["claimed_subject"], message["claimed_tenant_id"]) == ("alice", str(TENANT))
    assert message["request_id"]
    assert message["source_ip"] is None  # a TOKEN authorizer is given no address


def test_rejected_request_event_sends_the_source_ip_and_api_gateway_request_id(
    authorizer: ModuleType, intake_queue: tuple[Any, str]
) -> None:
    event = {
        "type": "REQUEST",
        "methodArn": ARN,
        "headers": {"Authorization": "Bearer not-a-jwt"},
        "requestContext": {"requestId": "apigw-req-1", "identity": {"sourceIp": "198.51.100.7"}},
    }

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _invoke(authorizer, event)

    (body,) = _queued(intake_queue)
    message = json.loads(body)
    assert (message["source_ip"], message["request_id"], message["reason"]) == (
        "198.51.100.7",
        "apigw-req-1",
        "malformed",
    )
    assert (message["claimed_subject"], message["claimed_tenant_id"]) == (None, None)


def test_accepted_token_sends_no_intake_message(authorizer: ModuleType, intake_queue: tuple[Any, str]) -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice")

    _invoke(authorizer, _token_event(f"Bearer {token}"))

    assert _queued(intake_queue) == []


def test_rejected_token_is_still_unauthorized_when_sqs_is_down(
    authorizer: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Down:
        def send_message(self, **_: Any) -> None:
            raise ConnectionError("sqs unreachable")

    monkeypatch.setattr(authorizer.intake, "client_factory", Down)

    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _invoke(authorizer, _token_event("Bearer not-a-jwt"))

    assert "not sent to the audit intake queue" in caplog.text
