"""The audit hooks of today's non-card paths: applied migrations, webhook signature rejections, DLQ redrive and
purge, outbox replay. Each leaves one audit row, written by the role that production runs the path as."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.audit import record_audit_event
from billing.aws.dead_letters import DeadLetterTool, SqsDeadLetterSink
from billing.aws.retry_queue import encode_retry
from billing.db.attempts import AttemptLedger
from billing.db.connection import Connection
from billing.db.migrations import discover
from billing.db.roles import LOGIN_USERS, DatabaseRole
from billing.domain.workflow import WorkflowWriteContext
from billing.outbox.events import OutboundEvent, PublishResult
from billing.outbox.replay import replay
from billing.services.ports import RetryRequest
from billing.webhooks.delivery import SUCCEEDED, signed_sandbox_delivery
from billing.webhooks.secrets import seed_webhook_secrets
from tests.lambda_harness import api_event, call, load_handler, set_function_environment


def _rows(admin: Connection, where: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
    return admin.execute(f"select * from billing_audit.entries where {where} order by id", params).fetchall()


def test_every_migration_from_the_audit_trail_on_is_recorded_once_by_the_runner(admin: Connection) -> None:
    rows = _rows(admin, "event_type = 'admin.migration_applied'")
    versions = [m.version for m in discover() if m.version >= "20261210_billing_audit_trail"]
    assert sorted(row["resource_id"] for row in rows) == versions
    checksums = {m.version: m.checksum for m in discover()}
    for row in rows:
        assert row["details"] == {"checksum_sha256": checksums[row["resource_id"]]}
        assert (row["actor"], row["outcome"]) == ("function:migrate", "succeeded")
        # Written by the runner's own login, as the owner (no run-time role).
        assert row["database_user"] not in {user.name for user in LOGIN_USERS.values()}


def test_a_webhook_signature_rejection_is_recorded_without_the_body(
    monkeypatch: pytest.MonkeyPatch, aws_credentials: str, db_url: str, admin: Connection
) -> None:
    with mock_aws():
        seed_webhook_secrets(boto3.client("secretsmanager"), {"sandbox": ["whsec_current"]})
        set_function_environment(monkeypatch, names.FunctionName.WEBHOOK, {"DATABASE_URL": db_url})
        webhook = load_handler("webhook")
        marker = f"ref_marker_{uuid4().hex}"
        headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, marker, secret="whsec_forged")
        event = api_event("POST", "/api/v1/billing/webhook/sandbox", tenant_id=None, body=body, headers=headers)
        event["requestContext"]["identity"]["sourceIp"] = "198.51.100.23"
        response = call(webhook, event)
    assert response["statusCode"] == 401
    (row,) = _rows(
        admin,
        "event_type = 'auth.webhook_signature_rejected' and correlation_id = %s",
        [event["requestContext"]["requestId"]],
    )
    assert (row["outcome"], row["actor"], row["resource_id"], row["source"]) == (
        "denied",
        "provider:sandbox",
        "sandbox",
        "198.51.100.23",
    )
    assert row["details"] == {"reason": "mismatch"}
    assert row["database_user"] == LOGIN_USERS[DatabaseRole.APP].name
    assert marker not in bytes(row["leaf"]).decode()


@pytest.fixture
def sqs(aws_credentials: str) -> Iterator[tuple[Any, str, str]]:
    with mock_aws():
        client = boto3.client("sqs")
        dlq = client.create_queue(QueueName=names.DEAD_LETTER_QUEUE_NAME)["QueueUrl"]
        retry = client.create_queue(QueueName=names.RETRY_QUEUE_NAME)["QueueUrl"]
        yield client, dlq, retry


def test_dlq_redrive_and_purge_are_operator_actions_in_the_trail(
    sqs: tuple[Any, str, str], worker: Connection, admin: Connection, tenant_id: UUID
) -> None:
    client, dlq, retry = sqs
    sink = SqsDeadLetterSink(client, dlq)
    requests = [RetryRequest(tenant_id, uuid4(), 2, datetime.now(UTC), f"corr-{n}") for n in range(3)]
    ids = [sink.park(encode_retry(r), request=r, reason="retries_exhausted", error_code="x") for r in requests]
    tool = DeadLetterTool(
        client,
        dlq,
        retry,
        AttemptLedger(worker),
        context=WorkflowWriteContext.user("ops-alice"),
        audit=lambda event: record_audit_event(worker, event),
        wait_seconds=0,
        empty_receives=1,
    )
    tool.redrive([ids[0]])
    assert tool.purge(confirm=True) == 2
    rows = _rows(admin, "event_type = 'admin.operator_action' and tenant_id = %s", [tenant_id])
    assert [(r["purpose"], r["resource_id"], r["actor"]) for r in rows[:1]] == [
        ("dlq_redrive", ids[0], "user:ops-alice")
    ]
    # Purged in whatever order the scan met them: one row per message.
    assert sorted((r["purpose"], r["resource_id"], r["actor"]) for r in rows[1:]) == sorted(
        ("dlq_purge", i, "user:ops-alice") for i in ids[1:]
    )
    assert rows[0]["details"]["execution_id"] == str(requests[0].execution_id)
    assert all(r["database_user"] == LOGIN_USERS[DatabaseRole.WORKER].name for r in rows)


class _Bus:
    def __init__(self) -> None:
        self.sent: list[OutboundEvent] = []

    def publish(self, events: Sequence[OutboundEvent]) -> list[PublishResult]:
        self.sent.extend(events)
        return [PublishResult(True, None) for _ in events]


def test_an_outbox_replay_is_an_operator_action_in_the_trail(worker: Connection, admin: Connection) -> None:
    execution_id = uuid4()
    report = replay(worker, _Bus(), execution_id=execution_id, operator="ops-bob", dry_run=True)
    assert report.selected == 0
    (row,) = _rows(admin, "purpose = 'outbox_replay' and resource_id = %s", [str(execution_id)])
    assert (row["actor"], row["outcome"], row["resource_type"]) == ("ops-bob", "succeeded", "outbox")
    assert row["details"]["dry_run"] == "true"
    assert row["details"]["selected"] == "0"


def test_a_replay_refused_for_its_arguments_is_recorded_as_failed(worker: Connection, admin: Connection) -> None:
    since = datetime.now(UTC) + timedelta(days=1000)
    with pytest.raises(ValueError, match="since"):
        replay(worker, _Bus(), since=since, until=since - timedelta(days=1), operator=f"ops-{uuid4().hex}")
    rows = _rows(admin, "purpose = 'outbox_replay' and details->>'since' = %s", [since.isoformat()])
    assert [(r["outcome"], r["details"]["error"]) for r in rows] == [("failed", "ValueError")]
