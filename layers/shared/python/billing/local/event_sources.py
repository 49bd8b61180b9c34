"""Local stand-ins for what AWS wires outside the functions: an SQS event source mapping and schedules."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("billing.local.event_sources")

Invoke = Callable[[dict[str, Any]], Any]


class SqsEventSource:
    """Polls a queue and invokes a function with batches of up to 10 records, as a Lambda event source mapping.

    Records the function reports in `batchItemFailures` (partial batch response) stay on the queue and come
    back after the visibility timeout; the queue's redrive policy parks them once maxReceiveCount is reached.
    Every other record of the batch is deleted.
    """

    def __init__(self, sqs: Any, queue_url: str, invoke: Invoke, *, batch_size: int = 10) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._invoke = invoke
        self._batch_size = batch_size
        self._queue_arn: str = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]

    def poll(self) -> int:
        """One receive-invoke-delete round; returns how many records were delivered."""
        messages = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return 0
        result = self._invoke({"Records": [self._record(message) for message in messages]}) or {}
        failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        if failed:
            log.warning("%d of %d records failed and stay on the queue", len(failed), len(messages))
        return len(messages)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue_arn,
            "awsRegion": self._queue_arn.split(":")[3],
        }
