"""Rejected bearer tokens reach the audit trail (PCI DSS 10.2.1.4): the authorizer's messages in moto's audit intake
queue, drained by the audit checkpoint function into billing_audit.entries and the Merkle tree, then deleted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from uuid import UUID

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.audit.intake import AuthFailure, drain_auth_failures
from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, TokenSettings, issue_token
from billing.db.connection import Connection
from tests.integration.audit_rig import load_checkpoint_function, seed_checkpoint_resources
from tests.lambda_harness import FakeLambdaContext, call, load_handler

BUCKET = "billing-audit-checkpoints-intake"
TENANT = UUID("6f1c2f7e-1111-4222-8333-944444444444")
ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123/prod/GET/api/v1/billing/executions"


@pytest.fixture
def aws(aws_credentials: str) -> Iterator[dict[str, Any]]:
    with mock_aws():
        key_ring = seed_checkpoint_resources(aws_credentials, BUCKET)
        sqs = boto3.client("sqs", region_name=aws_credentials)
        url = sqs.create_queue(QueueName=names.AUDIT_INTAKE_QUEUE_NAME)["QueueUrl"]
        yield {"sqs": sqs, "queue_url": url, "key_ring": key_ring}


@pytest.fixture
def checkpoint_function(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, private_db_url: str) -> ModuleType:
    environment = {names.ENV_AUDIT_INTAKE_QUEUE_URL: aws["queue_url"]}
    return load_checkpoint_function(monkeypatch, private_db_url, aws["key_ring"], BUCKET, **environment)


def _rejected_by_the_authorizer(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv(names.ENV_JWT_SECRET_ARN, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt")
    monkeypatch.setenv(names.ENV_AUDIT_INTAKE_QUEUE_URL, aws["queue_url"])
    authorizer = load_handler("authorizer")
    monkeypatch.setattr(authorizer, "token_settings", lambda: LOCAL_TOKEN_SETTINGS)
    event = {"type": "TOKEN", "authorizationToken": f"Bearer {token}", "methodArn": ARN}
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        authorizer.lambda_handler(event, FakeLambdaContext(aws_request_id="authorizer-req-1"))


def _send(aws: dict[str, Any], count: int) -> None:
    for n in range(count):
        failure = AuthFailure("expired", f"req-{n}", datetime.now(UTC), source_ip="203.0.113.9")
        aws["sqs"].send_message(QueueUrl=aws["queue_url"], MessageBody=failure.to_message())


def _auth_failures(admin: Connection) -> list[dict[str, Any]]:
    return admin.execute(
        "select e.actor, e.outcome, e.tenant_id, e.source, e.correlation_id, e.details, l.seq"
        " from billing_audit.entries e left join billing_audit.leaves l on l.entry_id = e.id"
        " where e.event_type = 'auth.failed' order by e.id"
    ).fetchall()


def _left_on_the_queue(aws: dict[str, Any]) -> int:
    attributes = aws["sqs"].get_queue_attributes(
        QueueUrl=aws["queue_url"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_the_checkpoint_function_records_rejected_tokens_in_the_tree_and_deletes_them(
    aws: dict[str, Any],
    checkpoint_function: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    private_admin: Connection,
) -> None:
    # Given a token for alice that the authorizer rejects, and an anonymous rejection already queued
    forged = issue_token(TokenSettings(LOCAL_TOKEN_SETTINGS.issuer, ("k" * 40,)), TENANT, "alice")
    _rejected_by_the_authorizer(aws, monkeypatch, forged)
    _send(aws, 1)

    # When the checkpoint function runs
    run = call(checkpoint_function, {})

    # Then both are entries of the trail, in this run's tree, and the queue is empty
    assert run["auth_failures"] == 2
    entries = _auth_failures(private_admin)
    assert [(e["actor"], e["outcome"], e["tenant_id"]) for e in entries] == [
        ("alice", "denied", None),
        ("anonymous", "denied", None),
    ]
    claimed, anonymous = entries
    assert claimed["details"]["reason"] == "signature_mismatch"
    assert claimed["details"]["claimed_tenant_id"] == str(TENANT)  # a claim, not the entry's tenant
    assert (claimed["source"], claimed["correlation_id"]) == ("function:authorizer", "authorizer-req-1")
    assert (anonymous["source"], anonymous["details"]["request_id"]) == ("203.0.113.9", "req-0")
    assert all(e["seq"] is not None and e["seq"] < run["tree_size"] for e in entries)
    assert forged not in str(entries)
    assert _left_on_the_queue(aws) == 0
    assert call(checkpoint_function, {})["auth_failures"] == 0


def test_a_run_drains_at_most_its_bound_in_batches_of_ten(
    aws: dict[str, Any], db: Connection, private_admin: Connection
) -> None:
    _send(aws, 25)

    assert drain_auth_failures(db, aws["sqs"], aws["queue_url"], max_messages=12) == 12
    assert len(_auth_failures(private_admin)) == 12
    assert drain_auth_failures(db, aws["sqs"], aws["queue_url"]) == 13
    assert len(_auth_failures(private_admin)) == 25


def test_messages_stay_on_the_queue_when_the_transaction_fails(
    aws: dict[str, Any], db: Connection, private_admin: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from billing.audit import intake

    _send(aws, 3)

    def broken(conn: Connection, event: Any) -> None:
        raise psycopg.OperationalError("database gone")

    monkeypatch.setattr(intake, "record_audit_event", broken)
    with pytest.raises(psycopg.OperationalError):
        drain_auth_failures(db, aws["sqs"], aws["queue_url"])

    assert _auth_failures(private_admin) == []
    assert _left_on_the_queue(aws) == 3  # not deleted: the next run, once they are visible again, records them
