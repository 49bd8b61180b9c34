"""The SQS retry queue: RetryScheduler adapter and the message format the retry worker consumes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from billing.services.ports import RetryRequest

# SQS refuses message delays above 15 minutes; the worker re-enqueues a message that arrives early.
MAX_SQS_DELAY_SECONDS = 900


def encode_retry(request: RetryRequest) -> str:
    return json.dumps(
        {
            "tenant_id": str(request.tenant_id),
            "execution_id": str(request.execution_id),
            "attempt": request.attempt,
            "not_before": request.not_before.isoformat(),
            "correlation_id": request.correlation_id,
        }
    )


def decode_retry(body: str) -> RetryRequest:
    """Parse a retry message; malformed input raises (and lands in the DLQ after redrive)."""
    data = json.loads(body)
    return RetryRequest(
        tenant_id=UUID(data["tenant_id"]),
        execution_id=UUID(data["execution_id"]),
        attempt=int(data["attempt"]),
        not_before=datetime.fromisoformat(data["not_before"]),
        correlation_id=data.get("correlation_id"),
    )


def delay_until(not_before: datetime, now: datetime) -> int:
    """Whole seconds SQS should hold the message: as close to not_before as SQS allows."""
    return max(0, min(MAX_SQS_DELAY_SECONDS, math.ceil((not_before - now).total_seconds())))


class SqsRetryScheduler:
    def __init__(
        self, client: Any, queue_url: str, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._client: Callable[[], Any] = lambda: client
        self._queue_url = queue_url
        self._clock = clock

    @classmethod
    def created_on_first_use(
        cls, client: Callable[[], Any], queue_url: str, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> SqsRetryScheduler:
        """A scheduler whose SQS client is made by the first retry: a request that schedules none never loads boto3."""
        scheduler = cls(None, queue_url, clock=clock)
        scheduler._client = client
        return scheduler

    def schedule(self, request: RetryRequest) -> None:
        self._client().send_message(
            QueueUrl=self._queue_url,
            MessageBody=encode_retry(request),
            DelaySeconds=delay_until(request.not_before, self._clock()),
        )
