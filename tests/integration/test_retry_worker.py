"""The retry worker on real PostgreSQL, the sandbox provider and moto SQS (a retry queue with a DLQ redrive policy).

Backoff jitter is injected: moto holds a delayed message for real seconds, so the SQS tests draw a zero delay and
the schedule itself is asserted from the draws (and, without SQS, from the requests' not_before), never the clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any, cast
from uuid import UUID, uuid4

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.aws.dead_letters import SqsDeadLetterSink
from billing.aws.retry_queue import MAX_SQS_DELAY_SECONDS, SqsRetryScheduler, decode_retry, encode_retry
from billing.db.attempts import AttemptLedger
from billing.db.connection import Connection, connect
from billing.db.connection_provider import ConnectionProvider
from billing.db.execution_repository import ExecutionRepository
from billing.domain.backoff import BackoffPolicy
from billing.domain.execution import Execution, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.transitions import (
    DEAD_LETTERED_EVENT_TYPE,
    RETRY_ATTEMPT_EVENT_TYPE,
    RETRY_SCHEDULED_EVENT_TYPE,
)
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.adapters import MAX_RETRIES_BY_RAIL
from billing.rails.ports import provider_idempotency_key
from billing.rails.results import Decision, ProviderError, SubmitResult
from billing.rails.sandbox import SandboxCharge, SandboxProvider, connections_to
from billing.services.execution_driver import ExecutionDriver
from billing.services.ports import RetryRequest, RetryScheduler
from billing.services.retry_worker import RETRIES_EXHAUSTED, DeadLetterSink, RetryOutcome, RetryWorker
from billing.worker_wiring import RetryRuntime, RetrySettings
from tests.factories import QuietObserver, create_execution
from tests.lambda_harness import FakeLambdaContext, load_handler, set_function_environment

REGION = "eu-west-1"
CTX = WorkflowWriteContext.service_default()
CARD_RETRIES = MAX_RETRIES_BY_RAIL[PaymentRail.CARD]


def no_jitter(low: float, high: float) -> float:
    return 0.0


@dataclass
class Queues:
    client: Any
    retry_url: str
    dlq_url: str

    def depth(self, url: str) -> int:
        attributes = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return sum(
            int(attributes[name])
            for name in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )

    def delayed(self, url: str) -> int:
        attributes = self.client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesDelayed"])

    def receive(self, url: str, *, max_messages: int = 10) -> list[dict[str, Any]]:
        """What a consumer gets; visibility 0 stands in for 'the visibility timeout has passed' without waiting."""
        messages: list[dict[str, Any]] = self.client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=max_messages,
            VisibilityTimeout=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return messages


@pytest.fixture
def queues() -> Iterator[Queues]:
    """The deployed shape: the retry queue parks a message in the DLQ after RETRY_MAX_RECEIVE_COUNT receives."""
    with mock_aws():
        client = boto3.client("sqs", region_name=REGION)
        dlq_url = client.create_queue(QueueName=names.DEAD_LETTER_QUEUE_NAME)["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(names.RETRY_MAX_RECEIVE_COUNT)}
        retry_url = client.create_queue(
            QueueName=names.RETRY_QUEUE_NAME, Attributes={"RedrivePolicy": json.dumps(redrive)}
        )["QueueUrl"]
        yield Queues(client, retry_url, dlq_url)


class ManualClock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Recorder:
    """A RetryScheduler that keeps the requests instead of sending them."""

    requests: list[RetryRequest] = field(default_factory=list)

    def schedule(self, request: RetryRequest) -> None:
        self.requests.append(request)


@dataclass
class Rig:
    """Builds the retry path the way worker_wiring does, with the test's clock, jitter and fakes.

    `worker_db_url` is the retry function's own database URL (billing_worker); the execute path's first drive runs
    on the test's billing_app connection instead.
    """

    worker_db_url: str
    queues: Queues
    sandbox: SandboxProvider
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    jitter: Callable[[float, float], float] = no_jitter
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    opened: list[Connection] = field(default_factory=list)

    def runtime(self) -> RetryRuntime:
        settings = RetrySettings.model_validate(
            {
                names.ENV_RETRY_QUEUE_URL: self.queues.retry_url,
                names.ENV_DLQ_URL: self.queues.dlq_url,
                "RETRY_BACKOFF_BASE_SECONDS": str(self.backoff.base_seconds),
                "RETRY_BACKOFF_CAP_SECONDS": str(self.backoff.cap_seconds),
            }
        )
        connections = ConnectionProvider(lambda *, refresh=False: self.worker_db_url)
        self.opened.append(connections.get())
        return RetryRuntime(
            settings,
            connections,
            sqs=self.queues.client,
            providers={"sandbox": self.sandbox},
            clock=self.clock,
            jitter=self.jitter,
        )

    def sqs_scheduler(self) -> SqsRetryScheduler:
        return SqsRetryScheduler(self.queues.client, self.queues.retry_url, clock=self.clock)

    def driver(self, conn: Connection, retries: RetryScheduler | None = None) -> ExecutionDriver:
        return ExecutionDriver(
            ExecutionRepository(conn),
            {"sandbox": self.sandbox},
            retries or self.sqs_scheduler(),
            QuietObserver(),
            backoff=self.backoff,
            clock=self.clock,
            jitter=self.jitter,
        )

    def worker(
        self,
        *,
        retries: RetryScheduler | None = None,
        requeue: RetryScheduler | None = None,
        dead_letters: DeadLetterSink | None = None,
        attempts: type[AttemptLedger] = AttemptLedger,
    ) -> RetryWorker:
        """A worker on its own connection, as each Lambda container has."""
        conn = connect(self.worker_db_url)
        self.opened.append(conn)
        return RetryWorker(
            ExecutionRepository(conn),
            attempts(conn),
            self.driver(conn, retries),
            {"sandbox": self.sandbox},
            requeue or self.sqs_scheduler(),
            dead_letters or SqsDeadLetterSink(self.queues.client, self.queues.dlq_url),
            clock=self.clock,
        )

    def first_drive(self, conn: Connection, execution: Execution, retries: RetryScheduler | None = None) -> Execution:
        """The execute function's drive: attempt 1, scheduling attempt 2 on a transient error."""
        return self.driver(conn, retries).drive(execution, correlation_id="corr-retry", context=CTX)


@pytest.fixture
def rig(worker_db_url: str, queues: Queues) -> Iterator[Rig]:
    made = Rig(worker_db_url, queues, SandboxProvider(connections_to(worker_db_url)))
    yield made
    for conn in made.opened:
        conn.close()


def card_execution(conn: Connection, tenant_id: UUID, instrument: str) -> Execution:
    return create_execution(conn, tenant_id, payment_rail=PaymentRail.CARD, payment_instrument_id=instrument)


def drain(runtime: RetryRuntime, *, max_polls: int = 20) -> list[RetryOutcome]:
    """Poll the retry queue as the event source mapping would, until nothing is left to receive."""
    outcomes: list[RetryOutcome] = []
    queue = runtime.retry_queue(visibility_timeout=0)
    worker = runtime.retry_worker()
    for _ in range(max_polls):
        report = worker.poll_once(queue)
        assert not report.failures, report.failures
        if not report.results:
            return outcomes
        outcomes.extend(result.outcome for result in report.results)
    raise AssertionError(f"the queue did not drain in {max_polls} polls: {outcomes}")


def charge(rig: Rig, execution: Execution) -> SandboxCharge:
    found = rig.sandbox.find_charge(idempotency_key=provider_idempotency_key(execution))
    assert found is not None
    return found


def current(conn: Connection, execution: Execution) -> Execution:
    found = ExecutionRepository(conn).get(execution.tenant_id, execution.id)
    assert found is not None
    return found


def event_types(conn: Connection, execution: Execution) -> list[str]:
    return [event.type for event in ExecutionRepository(conn).events(execution.tenant_id, execution.id)]


def delete_all(queues: Queues, url: str) -> None:
    for message in queues.receive(url):
        queues.client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


# -- the two scenarios of the issue ------------------------------------------------------------------------------


def test_provider_failing_twice_then_succeeding_completes_on_attempt_3_with_one_charge(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    # Given a card whose provider fails transiently on the first two attempts under a key
    execution = card_execution(conn, tenant_id, "tok_transient_2")

    # When the execute path makes attempt 1 and the retry worker drains the queue
    after_first = rig.first_drive(conn, execution)
    outcomes = drain(rig.runtime())

    # Then it completed on attempt 3, charged once under the one provider key
    assert (after_first.status, after_first.attempt_count) == (ExecutionStatus.PROCESSING, 1)
    assert outcomes == [RetryOutcome.RETRY_SCHEDULED, RetryOutcome.COMPLETED]
    final = current(conn, execution)
    assert (final.status, final.attempt_count, final.next_attempt_at) == (ExecutionStatus.COMPLETED, 3, None)
    stored = charge(rig, execution)
    assert (stored.attempts, stored.reference, stored.status.value) == (3, final.provider_reference, "succeeded")
    types = event_types(conn, execution)
    assert types.count(RETRY_SCHEDULED_EVENT_TYPE) == 2
    assert types.count(RETRY_ATTEMPT_EVENT_TYPE) == 2
    assert types[-1] == "billing.execution.completed"
    assert queues.depth(queues.retry_url) == queues.depth(queues.dlq_url) == 0


def test_provider_always_failing_ends_failed_after_max_retries_with_message_in_dlq(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    execution = card_execution(conn, tenant_id, "tok_always_transient")

    rig.first_drive(conn, execution)
    outcomes = drain(rig.runtime())

    assert outcomes == [RetryOutcome.RETRY_SCHEDULED] * (CARD_RETRIES - 1) + [RetryOutcome.DEAD_LETTERED]
    final = current(conn, execution)
    assert (final.status, final.attempt_count, final.last_error_code) == (
        ExecutionStatus.FAILED,
        1 + CARD_RETRIES,
        "processing_error",
    )
    assert charge(rig, execution).attempts == 1 + CARD_RETRIES
    # The last attempt's message is parked in the DLQ, tagged with why, and recorded on the execution.
    parked = queues.receive(queues.dlq_url)
    assert len(parked) == 1
    request = decode_retry(parked[0]["Body"])
    assert (request.execution_id, request.attempt) == (execution.id, 1 + CARD_RETRIES)
    assert parked[0]["MessageAttributes"]["reason"]["StringValue"] == RETRIES_EXHAUSTED
    assert parked[0]["MessageAttributes"]["error_code"]["StringValue"] == "processing_error"
    events = ExecutionRepository(conn).events(tenant_id, execution.id)
    dead_lettered = [e for e in events if e.type == DEAD_LETTERED_EVENT_TYPE]
    assert len(dead_lettered) == 1
    assert dead_lettered[0].metadata["message_id"] == parked[0]["MessageId"]
    assert dead_lettered[0].metadata["attempt"] == 1 + CARD_RETRIES
    assert queues.depth(queues.retry_url) == 0


def test_backoff_delays_follow_the_exponential_schedule_with_full_jitter(
    rig: Rig, conn: Connection, tenant_id: UUID
) -> None:
    # Given base 5 s, cap 12 s, and a jitter that records the range it draws from and takes half of it
    draws: list[tuple[float, float]] = []

    def half(low: float, high: float) -> float:
        draws.append((low, high))
        return high / 2

    clock = ManualClock()
    rig.clock, rig.jitter, rig.backoff = clock, half, BackoffPolicy(5.0, 12.0)
    # Requests are kept instead of sent; each is handed to the worker when the clock reaches its not_before.
    scheduled = Recorder()
    worker = rig.worker(retries=scheduled)
    execution = card_execution(conn, tenant_id, "tok_always_transient")

    rig.first_drive(conn, execution, scheduled)
    delays: list[float] = []
    while scheduled.requests:
        request = scheduled.requests.pop(0)
        delays.append((request.not_before - clock.now).total_seconds())
        clock.now = request.not_before
        worker.handle(request, body=encode_retry(request))

    # Then retry n waits uniform(0, min(cap, base * 2^(n-1))): ceilings 5, 10, then the 12 s cap
    assert draws == [(0.0, 5.0), (0.0, 10.0), (0.0, 12.0)]
    assert delays == [2.5, 5.0, 6.0]
    assert current(conn, execution).status is ExecutionStatus.FAILED


def test_backoff_base_and_cap_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.ENV_RETRY_QUEUE_URL, "https://sqs.example/retry")
    monkeypatch.setenv(names.ENV_DLQ_URL, "https://sqs.example/dlq")
    monkeypatch.setenv("RETRY_BACKOFF_BASE_SECONDS", "30")
    monkeypatch.setenv("RETRY_BACKOFF_CAP_SECONDS", "7200")

    backoff = RetrySettings.from_environment().backoff()

    assert [backoff.ceiling(n) for n in (1, 2, 3, 8, 9)] == [30.0, 60.0, 120.0, 3840.0, 7200.0]


# -- at-least-once delivery ----------------------------------------------------------------------------------------


def test_duplicate_message_after_the_attempt_ran_is_acknowledged_and_changes_nothing(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    execution = card_execution(conn, tenant_id, "tok_transient_2")
    rig.first_drive(conn, execution)
    (message,) = queues.receive(queues.retry_url)
    worker = rig.worker()

    first = worker.handle_message(message["Body"])
    events_before = event_types(conn, execution)
    again = worker.handle_message(message["Body"])

    assert (first.outcome, again.outcome) == (RetryOutcome.RETRY_SCHEDULED, RetryOutcome.STALE)
    assert event_types(conn, execution) == events_before
    assert charge(rig, execution).attempts == 2


def test_message_for_a_finished_execution_is_stale_and_submits_nothing(
    rig: Rig, conn: Connection, tenant_id: UUID
) -> None:
    execution = card_execution(conn, tenant_id, "tok_visa")
    done = rig.first_drive(conn, execution)
    request = RetryRequest(tenant_id, execution.id, 2, datetime.now(UTC), None)

    result = rig.worker().handle(request, body=encode_retry(request))

    assert done.status is ExecutionStatus.COMPLETED
    assert result.outcome is RetryOutcome.STALE
    assert charge(rig, execution).attempts == 1


def test_same_message_handled_by_two_consumers_at_once_is_resubmitted_once(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    # Given two consumers (each on its own connection) that have both read the execution before either claims
    gate = threading.Barrier(2, timeout=10)

    class MeetBeforeClaim(AttemptLedger):
        def claim_attempt(self, *args: Any, **kwargs: Any) -> Execution | None:
            gate.wait()
            return super().claim_attempt(*args, **kwargs)

    execution = card_execution(conn, tenant_id, "tok_transient_1")
    rig.first_drive(conn, execution)
    (message,) = queues.receive(queues.retry_url)
    workers = [rig.worker(attempts=MeetBeforeClaim) for _ in range(2)]

    # When both handle the same message at the same time
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda worker: worker.handle_message(message["Body"]).outcome, workers))

    # Then exactly one claimed attempt 2 and resubmitted; the provider saw it once
    assert sorted(outcomes) == sorted([RetryOutcome.COMPLETED, RetryOutcome.STALE])
    assert charge(rig, execution).attempts == 2
    assert event_types(conn, execution).count(RETRY_ATTEMPT_EVENT_TYPE) == 1


def test_message_arriving_before_not_before_is_re_enqueued_with_the_remaining_delay(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    # Given a retry due in two hours, beyond the 15 minutes SQS can hold a message
    clock = ManualClock()
    rig.clock = clock
    execution = card_execution(conn, tenant_id, "tok_transient_1")
    rig.first_drive(conn, execution)
    delete_all(queues, queues.retry_url)  # the drive's own message is not this test's concern
    request = RetryRequest(tenant_id, execution.id, 2, clock.now + timedelta(hours=2), "corr-early")

    # When it arrives now
    result = rig.worker().handle(request, body=encode_retry(request))

    # Then it goes back to the queue, held for the SQS maximum, and nothing is attempted
    assert (result.outcome, result.deferred_seconds) == (RetryOutcome.DEFERRED, 7200)
    assert queues.delayed(queues.retry_url) == 1
    assert charge(rig, execution).attempts == 1
    assert RETRY_ATTEMPT_EVENT_TYPE not in event_types(conn, execution)


def test_deferred_message_hops_at_most_15_minutes_at_a_time_until_due_then_runs(
    rig: Rig, conn: Connection, tenant_id: UUID
) -> None:
    clock = ManualClock()
    rig.clock = clock
    hops = Recorder()
    execution = card_execution(conn, tenant_id, "tok_transient_1")
    rig.first_drive(conn, execution, Recorder())
    worker = rig.worker(requeue=hops)
    request = RetryRequest(tenant_id, execution.id, 2, clock.now + timedelta(seconds=2000), None)

    seen: list[tuple[RetryOutcome, int | None]] = []
    while True:
        result = worker.handle(request, body=encode_retry(request))
        seen.append((result.outcome, result.deferred_seconds))
        if result.outcome is not RetryOutcome.DEFERRED:
            break
        # SQS hands the re-enqueued copy back after min(remaining, 900) seconds
        clock.now += timedelta(seconds=min(result.deferred_seconds or 0, MAX_SQS_DELAY_SECONDS))
        request = hops.requests.pop()

    assert seen == [
        (RetryOutcome.DEFERRED, 2000),
        (RetryOutcome.DEFERRED, 1100),
        (RetryOutcome.DEFERRED, 200),
        (RetryOutcome.COMPLETED, None),
    ]


def test_parking_failure_fails_the_message_and_its_next_delivery_parks_it_once(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    # Given an execution on its last attempt and a DLQ that cannot be reached
    class Unreachable:
        def park(self, body: str, **details: Any) -> str:
            raise ConnectionError("DLQ unreachable")

    execution = card_execution(conn, tenant_id, "tok_always_transient")
    scheduled = Recorder()
    rig.first_drive(conn, execution, scheduled)
    worker = rig.worker(retries=scheduled)
    while (request := scheduled.requests.pop()).attempt <= CARD_RETRIES:
        worker.handle(request, body=encode_retry(request))
    last_body = encode_retry(request)
    with pytest.raises(ConnectionError):
        rig.worker(dead_letters=Unreachable()).handle_message(last_body)
    assert current(conn, execution).status is ExecutionStatus.FAILED

    # When the message comes back (twice)
    redelivered = rig.worker().handle_message(last_body)
    once_more = rig.worker().handle_message(last_body)

    # Then the first redelivery parks it and records that; the next is a duplicate
    assert (redelivered.outcome, once_more.outcome) == (RetryOutcome.DEAD_LETTERED, RetryOutcome.STALE)
    assert queues.depth(queues.dlq_url) == 1
    assert event_types(conn, execution).count(DEAD_LETTERED_EVENT_TYPE) == 1


# -- the Lambda handler: Powertools batch processing with partial batch responses ----------------------------------


@pytest.fixture
def retry_function(
    worker_db_url: str, queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., dict[str, Any]]:
    """The retry function as deployed, connecting as its role (billing_worker)."""
    set_function_environment(
        monkeypatch,
        names.FunctionName.RETRY_DLQ,
        {
            "DATABASE_URL": worker_db_url,
            names.ENV_RETRY_QUEUE_URL: queues.retry_url,
            names.ENV_DLQ_URL: queues.dlq_url,
        },
    )
    module: ModuleType = load_handler("retry_dlq")

    def invoke(event: dict[str, Any], context: FakeLambdaContext | None = None) -> dict[str, Any]:
        result: dict[str, Any] = module.lambda_handler(event, context or FakeLambdaContext())
        return result

    return invoke


def sqs_event(queues: Queues, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event the SQS event source mapping sends for received messages."""
    arn = queues.client.get_queue_attributes(QueueUrl=queues.retry_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def deliver(queues: Queues, invoke: Callable[[dict[str, Any]], dict[str, Any]]) -> list[str]:
    """One event source mapping poll: receive, invoke, delete what succeeded; the ids reported as failed."""
    messages = queues.receive(queues.retry_url)
    if not messages:
        return []
    response = invoke(sqs_event(queues, messages))
    failed = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    for message in messages:
        if message["MessageId"] not in failed:
            queues.client.delete_message(QueueUrl=queues.retry_url, ReceiptHandle=message["ReceiptHandle"])
    return failed


def test_handler_with_a_poison_message_reports_only_it_and_its_neighbours_complete(
    rig: Rig,
    conn: Connection,
    queues: Queues,
    tenant_id: UUID,
    retry_function: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    # Given two due retries and, between them, a message that is not a retry request
    executions = [card_execution(conn, tenant_id, "tok_transient_1") for _ in range(2)]
    rig.first_drive(conn, executions[0])
    poison_id = queues.client.send_message(QueueUrl=queues.retry_url, MessageBody='{"not": "a retry"}')["MessageId"]
    rig.first_drive(conn, executions[1])

    # When the function gets them in one batch
    failed = deliver(queues, retry_function)

    # Then only the poison message is reported failed; both executions completed on attempt 2
    assert failed == [poison_id]
    for execution in executions:
        final = current(conn, execution)
        assert (final.status, final.attempt_count) == (ExecutionStatus.COMPLETED, 2)

    # And the queue's redrive policy parks the poison message after RETRY_MAX_RECEIVE_COUNT receives
    for _ in range(names.RETRY_MAX_RECEIVE_COUNT - 1):
        assert deliver(queues, retry_function) == [poison_id]
    assert deliver(queues, retry_function) == []
    parked = queues.receive(queues.dlq_url)
    assert [m["MessageId"] for m in parked] == [poison_id]


def test_handler_with_a_retry_for_an_unknown_execution_fails_that_record(
    queues: Queues, retry_function: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    request = RetryRequest(uuid4(), uuid4(), 2, datetime.now(UTC), None)
    message_id = queues.client.send_message(QueueUrl=queues.retry_url, MessageBody=encode_retry(request))["MessageId"]

    assert deliver(queues, retry_function) == [message_id]


def test_handler_near_its_timeout_leaves_every_record_for_the_next_delivery(
    rig: Rig,
    conn: Connection,
    queues: Queues,
    tenant_id: UUID,
    retry_function: Callable[..., dict[str, Any]],
) -> None:
    execution = card_execution(conn, tenant_id, "tok_transient_1")
    rig.first_drive(conn, execution)
    messages = queues.receive(queues.retry_url)

    response = retry_function(sqs_event(queues, messages), FakeLambdaContext(remaining_ms=5_000))

    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == [messages[0]["MessageId"]]
    assert (current(conn, execution).attempt_count, charge(rig, execution).attempts) == (1, 1)


def test_retries_exhausted_after_an_attempt_whose_answer_was_lost_leave_the_charge_for_reconciliation(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    # Given a card whose first attempt is charged but its answer lost, then a provider unreachable for every retry
    sandbox = rig.sandbox

    class UnreachableAfterFirstAttempt:
        name = sandbox.name
        submits = 0

        def submit(self, charge: Any, idempotency_key: str) -> SubmitResult:
            self.submits += 1
            if self.submits == 1:
                return sandbox.submit(charge, idempotency_key)
            error = ProviderError("provider_unavailable", "sandbox unreachable", 503, retryable=True)
            return SubmitResult.from_error(error, Decision.RETRY)

        def check_status(self, **lookup: Any) -> Any:
            return sandbox.check_status(**lookup)

        def decision_for(self, error_code: str) -> Decision:
            return sandbox.decision_for(error_code)

        def for_tenant(self, tenant_id: Any) -> Any:
            return self

    rig.sandbox = cast(SandboxProvider, UnreachableAfterFirstAttempt())
    execution = card_execution(conn, tenant_id, "tok_timeout")

    # When attempt 1 and every retry run
    rig.first_drive(conn, execution)
    outcomes = drain(rig.runtime())

    # Then the execution is not failed over a charge that exists: it stays in processing for reconciliation
    assert outcomes == [RetryOutcome.RETRY_SCHEDULED] * (CARD_RETRIES - 1) + [RetryOutcome.LEFT_FOR_RECONCILIATION]
    assert sandbox.find_charge(idempotency_key=provider_idempotency_key(execution)) is not None
    final = current(conn, execution)
    assert (final.status, final.attempt_count) == (ExecutionStatus.PROCESSING, 1 + CARD_RETRIES)
    assert queues.depth(queues.dlq_url) == 0


def test_each_retry_attempt_is_assessed_and_kept_but_its_attempt_is_counted_once(
    rig: Rig, conn: Connection, queues: Queues, tenant_id: UUID
) -> None:
    from billing.authentication.flow import ThreeDSecure, ThreeDSecureSettings, sandbox_tokens
    from billing.risk.gate import RiskGate
    from billing.risk.postgres import AssessmentLog
    from billing.risk.reviews import ReviewStore
    from billing.services.pre_submission import PreSubmission

    execution = card_execution(conn, tenant_id, "tok_transient_2")
    checks = PreSubmission(
        RiskGate(conn),
        ThreeDSecure(conn, ThreeDSecureSettings(names.DEFAULT_PUBLIC_API_URL), sandbox_tokens=sandbox_tokens(conn)),
        ReviewStore(conn),
    )
    first = ExecutionDriver(
        ExecutionRepository(conn), {"sandbox": rig.sandbox}, rig.sqs_scheduler(), QuietObserver(),
        backoff=rig.backoff, clock=rig.clock, jitter=rig.jitter, pre_submission=checks,
    )  # fmt: skip
    first.drive(execution, correlation_id="corr-risk-retry", context=CTX)
    assert drain(rig.runtime()) == [RetryOutcome.RETRY_SCHEDULED, RetryOutcome.COMPLETED]

    kept = AssessmentLog(conn).of_execution(tenant_id, execution.id)
    assert [(a.attempt, a.decision) for a in kept] == [(1, "allow"), (2, "allow"), (3, "allow")]
    # Velocity saw the execution once, whatever its attempts: every assessment read the same single row.
    assert {a.facts["attempts_per_instrument_1h"] for a in kept} == {1}
    assert event_types(conn, execution).count("billing.execution.risk_assessed") == 3
    assert current(conn, execution).status is ExecutionStatus.COMPLETED
