from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from billing.local.event_sources import SqsEventSource


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("sqs")


def test_poll_deletes_handled_records_and_keeps_reported_failures(sqs: Any) -> None:
    queue = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    for number in range(3):
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"n": number}))
    seen: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        seen.extend(event["Records"])
        poison = [r["messageId"] for r in event["Records"] if json.loads(r["body"])["n"] == 1]
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in poison]}

    delivered = SqsEventSource(sqs, queue, invoke).poll()

    assert delivered == 3
    assert {r["eventSource"] for r in seen} == {"aws:sqs"}
    assert all(r["eventSourceARN"].endswith(":q") for r in seen)
    left = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"]) for m in left] == [{"n": 1}]


def test_poll_of_empty_queue_invokes_nothing(sqs: Any) -> None:
    queue = sqs.create_queue(QueueName="empty")["QueueUrl"]
    calls: list[Any] = []
    assert SqsEventSource(sqs, queue, calls.append).poll() == 0
    assert calls == []
