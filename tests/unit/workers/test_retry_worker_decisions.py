"""The retry worker's decisions, with every port faked: no database, no queue, no provider."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from billing.aws.retry_queue import MAX_SQS_DELAY_SECONDS, SqsRetryScheduler, encode_retry
from billing.domain.errors import ExecutionNotFound
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.rails.sandbox import sandbox_decision_for
from billing.services.ports import RetryRequest
from billing.services.retry_worker import RETRIES_EXHAUSTED, QueueMessage, RetryOutcome, RetryWorker
from tests.factories import in_memory_execution

NOW = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)


def execution(**overrides: Any) -> Execution:
    return in_memory_execution(
        **{"attempt_count": 1, "last_error_code": "processing_error", "next_attempt_at": NOW, **overrides}
    )


class FakeProvider:
    name = "sandbox"

    def decision_for(self, error_code: str) -> Any:
        return sandbox_decision_for(error_code)

    def for_tenant(self, tenant_id: Any) -> FakeProvider:
        return self


class Fakes:
    """Stands in for the repository, the attempt ledger, the driver, the queues and the DLQ at once."""

    def __init__(self, stored: Execution | None, after_resubmit: Execution | None = None) -> None:
        self.stored = stored
        self.after_resubmit = after_resubmit
        self.claims: list[int] = []
        self.resubmitted: list[Execution] = []
        self.requeued: list[RetryRequest] = []
        self.parked: list[tuple[str, str, str | None]] = []
        self.dead_letter_records: list[dict[str, Any]] = []
        self.already_parked = False

    # repository
    def get(self, tenant_id: Any, execution_id: Any) -> Execution | None:
        return self.stored

    # attempt ledger
    def claim_attempt(self, tenant_id: Any, execution_id: Any, context: Any, *, attempt: int, **kw: Any) -> Any:
        self.claims.append(attempt)
        assert self.stored is not None
        return dataclasses.replace(self.stored, attempt_count=attempt, next_attempt_at=None)

    def record_dead_lettered(self, *args: Any, **details: Any) -> Any:
        self.dead_letter_records.append(details)
        return self.stored

    def was_dead_lettered(self, *args: Any, **details: Any) -> bool:
        return self.already_parked

    # driver
    def resubmit(self, claimed: Execution, **kw: Any) -> Execution:
        self.resubmitted.append(claimed)
        assert self.after_resubmit is not None
        return self.after_resubmit

    # requeue scheduler
    def schedule(self, request: RetryRequest) -> None:
        self.requeued.append(request)

    # dead-letter sink
    def park(self, body: str, *, request: RetryRequest, reason: str, error_code: str | None) -> str:
        self.parked.append((body, reason, error_code))
        return "dlq-message-1"

    def worker(self, *, now: datetime = NOW) -> RetryWorker:
        fake = cast(Any, self)
        return RetryWorker(fake, fake, fake, {"sandbox": cast(Any, FakeProvider())}, fake, fake, clock=lambda: now)


def due(stored: Execution, attempt: int = 2) -> RetryRequest:
    return RetryRequest(stored.tenant_id, stored.id, attempt, NOW, stored.correlation_id)


def handle(fakes: Fakes, request: RetryRequest) -> Any:
    return fakes.worker().handle(request, body=encode_retry(request))


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ({"status": ExecutionStatus.COMPLETED, "provider_reference": "sbx_1"}, RetryOutcome.COMPLETED),
        ({"status": ExecutionStatus.PENDING, "provider_reference": "sbx_1"}, RetryOutcome.SETTLEMENT_PENDING),
        ({"status": ExecutionStatus.FAILED, "last_error_code": "card_declined"}, RetryOutcome.DECLINED),
        ({"status": ExecutionStatus.PROCESSING, "next_attempt_at": NOW}, RetryOutcome.RETRY_SCHEDULED),
        ({"status": ExecutionStatus.PROCESSING, "next_attempt_at": None}, RetryOutcome.LEFT_FOR_RECONCILIATION),
    ],
)
def test_due_attempt_is_claimed_resubmitted_and_classified_by_the_result(
    after: dict[str, Any], expected: RetryOutcome
) -> None:
    stored = execution()
    fakes = Fakes(stored, dataclasses.replace(stored, attempt_count=2, **after))

    result = handle(fakes, due(stored))

    assert result.outcome is expected
    assert fakes.claims == [2]
    assert [e.attempt_count for e in fakes.resubmitted] == [2]
    assert fakes.parked == []


def test_failure_with_a_retryable_code_is_exhaustion_and_parks_the_message_with_a_record() -> None:
    stored = execution(attempt_count=3)
    failed = dataclasses.replace(stored, status=ExecutionStatus.FAILED, attempt_count=4)
    fakes = Fakes(stored, failed)
    request = due(stored, attempt=4)

    result = handle(fakes, request)

    assert (result.outcome, result.dead_letter_message_id) == (RetryOutcome.DEAD_LETTERED, "dlq-message-1")
    assert fakes.parked == [(encode_retry(request), RETRIES_EXHAUSTED, "processing_error")]
    assert fakes.dead_letter_records[0]["attempt"] == 4
    assert fakes.dead_letter_records[0]["message_id"] == "dlq-message-1"


@pytest.mark.parametrize(
    "stored",
    [
        execution(attempt_count=2),  # attempt 2 already claimed (a duplicate)
        execution(attempt_count=0),  # an out-of-order message from the future
        execution(status=ExecutionStatus.COMPLETED, attempt_count=1),
        execution(status=ExecutionStatus.FAILED, attempt_count=1, last_error_code="card_declined"),
    ],
)
def test_message_whose_attempt_is_not_next_is_stale_and_touches_nothing(stored: Execution) -> None:
    fakes = Fakes(stored)

    result = handle(fakes, due(stored))

    assert result.outcome is RetryOutcome.STALE
    assert (fakes.claims, fakes.resubmitted, fakes.parked) == ([], [], [])


def test_redelivered_exhaustion_is_parked_only_if_not_recorded_yet() -> None:
    stored = execution(status=ExecutionStatus.FAILED, attempt_count=4)
    fakes = Fakes(stored)

    first = handle(fakes, due(stored, attempt=4))
    fakes.already_parked = True
    second = handle(fakes, due(stored, attempt=4))

    assert (first.outcome, second.outcome) == (RetryOutcome.DEAD_LETTERED, RetryOutcome.STALE)
    assert len(fakes.parked) == 1


def test_message_for_an_unknown_execution_raises_so_the_redrive_policy_parks_it() -> None:
    stored = execution()
    fakes = Fakes(None)

    with pytest.raises(ExecutionNotFound):
        handle(fakes, due(stored))


@pytest.mark.parametrize("body", ["", "not json", "{}", json.dumps({"tenant_id": "x"})])
def test_malformed_body_raises(body: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        Fakes(execution()).worker().handle_message(body)


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": f"m-{len(self.sent)}"}


@pytest.mark.parametrize(
    ("early_by", "expected_delay"),
    [
        (timedelta(seconds=1), 1),
        (timedelta(seconds=899.2), 900),
        (timedelta(minutes=15), MAX_SQS_DELAY_SECONDS),
        (timedelta(hours=6), MAX_SQS_DELAY_SECONDS),
    ],
)
def test_early_message_is_sent_back_for_the_remaining_delay_capped_at_the_sqs_maximum(
    early_by: timedelta, expected_delay: int
) -> None:
    stored = execution()
    fakes = Fakes(stored)
    sqs = RecordingSqs()
    worker = RetryWorker(
        cast(Any, fakes),
        cast(Any, fakes),
        cast(Any, fakes),
        {},
        SqsRetryScheduler(sqs, "q", clock=lambda: NOW),
        cast(Any, fakes),
        clock=lambda: NOW,
    )
    request = RetryRequest(stored.tenant_id, stored.id, 2, NOW + early_by, "corr-1")

    result = worker.handle(request, body=encode_retry(request))

    assert result.outcome is RetryOutcome.DEFERRED
    assert [(m["DelaySeconds"], m["MessageBody"]) for m in sqs.sent] == [(expected_delay, encode_retry(request))]
    assert fakes.claims == []


class ListQueue:
    def __init__(self, bodies: list[str]) -> None:
        self.messages = [QueueMessage(f"m-{n}", body, f"r-{n}") for n, body in enumerate(bodies)]
        self.deleted: list[str] = []

    def receive(self, max_messages: int) -> list[QueueMessage]:
        return self.messages[:max_messages]

    def delete(self, receipt_handle: str) -> None:
        self.deleted.append(receipt_handle)


def test_poll_once_deletes_handled_messages_and_leaves_a_failing_one_on_the_queue() -> None:
    stored = execution(status=ExecutionStatus.COMPLETED)
    fakes = Fakes(stored)
    queue = ListQueue([encode_retry(due(stored)), "poison", encode_retry(due(stored))])

    report = fakes.worker().poll_once(queue)

    assert [r.outcome for r in report.results] == [RetryOutcome.STALE, RetryOutcome.STALE]
    assert queue.deleted == ["r-0", "r-2"]
    assert [message_id for message_id, _ in report.failures] == ["m-1"]
