"""The retry worker: consumes retry requests and resubmits the execution under the same provider idempotency key.

One message is one attempt. SQS delivers at least once and out of order, so the message only says which attempt
is due; the database decides whether it still is:

1. Early (SQS holds a message for at most 15 minutes, longer backoffs arrive early): send it back with the
   remaining delay, capped at 15 minutes per hop, and ack. Nothing else happens.
2. The execution is no longer in processing, or its attempt count is not `attempt - 1`: a duplicate or stale
   message. Ack and do nothing.
3. Claim the attempt (db.attempts: a guarded update that only one consumer can win), then resubmit through the
   ExecutionDriver. The provider key never changes between attempts, so a charge that went through on an attempt
   whose answer was lost is replayed, never made twice.
4. After the resubmit the driver has either finished the execution, scheduled the next attempt (a new message) or,
   on the last attempt, given up. Retries exhausted on a transient error fail the execution (the driver's
   mark_failed, with the last error code) and this worker parks the message in the dead-letter queue, recorded as
   a `billing.execution.dead_lettered` event, so the DLQ alarm tells an operator at once. An unknown outcome on the
   last attempt stays in processing: the reconciliation worker asks the provider and settles it.

Dead letters are sent explicitly rather than by failing the message until the queue's redrive policy moves it:
that would take maxReceiveCount receives, each a visibility timeout apart, and report as errors what is an
expected outcome. The redrive policy still covers everything this worker does not finish: a crash, a poison
message, an unreachable database. If parking fails after the execution was failed, the message fails too; the
next delivery sees the failed execution without its dead-letter record and parks it then.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol, assert_never

from billing.aws.retry_queue import decode_retry
from billing.db.attempts import AttemptLedger
from billing.db.execution_repository import ExecutionRepository
from billing.domain.errors import ExecutionNotFound
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.adapters import adapter_for
from billing.rails.ports import PaymentProvider
from billing.rails.results import Decision, ProviderError
from billing.services.execution_driver import ExecutionDriver
from billing.services.ports import RetryRequest, RetryScheduler

Clock = Callable[[], datetime]

# Why a message was parked; also the `reason` attribute of the DLQ message.
RETRIES_EXHAUSTED = "retries_exhausted"


class DeadLetterSink(Protocol):
    def park(self, body: str, *, request: RetryRequest, reason: str, error_code: str | None) -> str:
        """Put the message into the dead-letter queue as it was received; the new message's id."""
        ...


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """A received message: its id, body, and the handle that deletes it."""

    message_id: str
    body: str
    receipt_handle: str


class MessageQueue(Protocol):
    """The retry queue as a local poller sees it (in AWS the Lambda event source mapping does this)."""

    def receive(self, max_messages: int) -> Sequence[QueueMessage]: ...

    def delete(self, receipt_handle: str) -> None: ...


class RetryOutcome(StrEnum):
    """What one retry message led to."""

    DEFERRED = "deferred"  # arrived before not_before: sent back with the remaining delay
    STALE = "stale"  # duplicate, out of date, or another consumer took the attempt: nothing done
    COMPLETED = "completed"  # the resubmit charged: completed
    SETTLEMENT_PENDING = "settlement_pending"  # accepted for asynchronous settlement (or customer action)
    DECLINED = "declined"  # the provider refused for good: failed with its code
    RETRY_SCHEDULED = "retry_scheduled"  # failed retryably again: the next attempt is on the queue
    DEAD_LETTERED = "dead_lettered"  # retries exhausted: failed, message parked in the DLQ
    LEFT_FOR_RECONCILIATION = "left_for_reconciliation"  # last attempt's outcome unknown: the reconciler settles it


@dataclass(frozen=True, slots=True)
class RetryResult:
    outcome: RetryOutcome
    request: RetryRequest
    execution: Execution | None = None
    # Seconds still to wait when the message came early (DEFERRED; SQS holds each hop for at most 900 of them),
    # or the id of the parked copy (DEAD_LETTERED).
    deferred_seconds: int | None = None
    dead_letter_message_id: str | None = None

    def as_log(self) -> dict[str, object]:
        """The fields of the worker's one log line per message."""
        execution = self.execution
        return {
            "outcome": self.outcome.value,
            "tenant_id": str(self.request.tenant_id),
            "execution_id": str(self.request.execution_id),
            "attempt": self.request.attempt,
            "status": execution.status.value if execution else None,
            "attempt_count": execution.attempt_count if execution else None,
            "error_code": execution.last_error_code if execution else None,
            "deferred_seconds": self.deferred_seconds,
            "dead_letter_message_id": self.dead_letter_message_id,
            "correlation_id": self.request.correlation_id,
        }


@dataclass(frozen=True, slots=True)
class PollReport:
    """One local poll: what each handled message led to, and the (message id, error) of those left on the queue."""

    results: tuple[RetryResult, ...]
    failures: tuple[tuple[str, str], ...]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RetryWorker:
    """Handles retry messages one at a time; safe to run in parallel and to receive a message more than once."""

    def __init__(
        self,
        repository: ExecutionRepository,
        attempts: AttemptLedger,
        driver: ExecutionDriver,
        providers: Mapping[str, PaymentProvider],
        requeue: RetryScheduler,
        dead_letters: DeadLetterSink,
        *,
        context: WorkflowWriteContext | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self._repository = repository
        self._attempts = attempts
        self._driver = driver
        self._providers = providers
        self._requeue = requeue
        self._dead_letters = dead_letters
        self._context = context or WorkflowWriteContext.system()
        self._clock = clock

    def handle_message(self, body: str) -> RetryResult:
        """Handle one message body; a malformed body or unknown execution raises (the redrive policy parks it)."""
        return self.handle(decode_retry(body), body=body)

    def handle(self, request: RetryRequest, *, body: str) -> RetryResult:
        """Run the attempt the request names, if it is still due (see the module docstring)."""
        remaining = math.ceil((request.not_before - self._clock()).total_seconds())
        if remaining > 0:
            # The scheduler caps the delay at SQS's 15 minutes; the message comes back as often as it needs to.
            self._requeue.schedule(request)
            return RetryResult(RetryOutcome.DEFERRED, request, deferred_seconds=remaining)
        execution = self._repository.get(request.tenant_id, request.execution_id)
        if execution is None:
            raise ExecutionNotFound(
                f"retry for unknown execution {request.execution_id}", execution_id=str(request.execution_id)
            )
        if execution.status is not ExecutionStatus.PROCESSING or execution.attempt_count != request.attempt - 1:
            return self._not_due(request, execution, body)
        claimed = self._attempts.claim_attempt(
            request.tenant_id,
            request.execution_id,
            self._context,
            attempt=request.attempt,
            correlation_id=request.correlation_id,
        )
        if claimed is None:
            # Another consumer claimed it between our read and our claim.
            return RetryResult(RetryOutcome.STALE, request, execution)
        result = self._driver.resubmit(claimed, correlation_id=request.correlation_id, context=self._context)
        return self._after_attempt(request, result, body)

    def poll_once(self, queue: MessageQueue, *, max_messages: int = 10) -> PollReport:
        """Receive one batch and handle each message, deleting those handled (for a local stack without Lambda).

        A message that raises stays on the queue and comes back after its visibility timeout, as with the event
        source mapping's partial batch responses; its neighbours are unaffected.
        """
        results: list[RetryResult] = []
        failures: list[tuple[str, str]] = []
        for message in queue.receive(max_messages):
            try:
                result = self.handle_message(message.body)
            except Exception as exc:
                failures.append((message.message_id, f"{type(exc).__name__}: {exc}"))
                continue
            queue.delete(message.receipt_handle)
            results.append(result)
        return PollReport(tuple(results), tuple(failures))

    def _after_attempt(self, request: RetryRequest, execution: Execution, body: str) -> RetryResult:
        match execution.status:
            case ExecutionStatus.COMPLETED:
                return RetryResult(RetryOutcome.COMPLETED, request, execution)
            case ExecutionStatus.PENDING:
                return RetryResult(RetryOutcome.SETTLEMENT_PENDING, request, execution)
            case ExecutionStatus.FAILED:
                if self._exhausted(execution):
                    return self._park(request, execution, body)
                return RetryResult(RetryOutcome.DECLINED, request, execution)
            case ExecutionStatus.PROCESSING:
                if execution.attempt_count == request.attempt and execution.next_attempt_at is not None:
                    return RetryResult(RetryOutcome.RETRY_SCHEDULED, request, execution)
                if execution.attempt_count == request.attempt:
                    return RetryResult(RetryOutcome.LEFT_FOR_RECONCILIATION, request, execution)
                return RetryResult(RetryOutcome.STALE, request, execution)
            case ExecutionStatus.CREATED | ExecutionStatus.CANCELED:
                # Unreachable from processing; reported rather than asserted so a surprise is visible in logs.
                return RetryResult(RetryOutcome.STALE, request, execution)
            case _:
                assert_never(execution.status)

    def _not_due(self, request: RetryRequest, execution: Execution, body: str) -> RetryResult:
        """A message whose attempt is not the next one; only an unparked exhaustion still needs doing."""
        if (
            execution.status is ExecutionStatus.FAILED
            and execution.attempt_count == request.attempt
            and self._exhausted(execution)
            and not self._attempts.was_dead_lettered(request.tenant_id, request.execution_id, attempt=request.attempt)
        ):
            # An earlier delivery failed the execution and died before the message reached the DLQ.
            return self._park(request, execution, body)
        return RetryResult(RetryOutcome.STALE, request, execution)

    def _exhausted(self, execution: Execution) -> bool:
        """True if a failed execution failed because its retries ran out, not because the provider refused.

        The driver only fails an execution with a retryable code when no retry is left; every other failure
        carries the provider's refusal code, which its decision table maps to FAIL.
        """
        code = execution.last_error_code
        if code is None:
            return False
        adapter = adapter_for(execution, self._providers)
        return adapter.decision_for(ProviderError(code, "last error recorded on the execution")) is Decision.RETRY

    def _park(self, request: RetryRequest, execution: Execution, body: str) -> RetryResult:
        message_id = self._dead_letters.park(
            body, request=request, reason=RETRIES_EXHAUSTED, error_code=execution.last_error_code
        )
        self._attempts.record_dead_lettered(
            request.tenant_id,
            request.execution_id,
            self._context,
            attempt=request.attempt,
            message_id=message_id,
            reason=RETRIES_EXHAUSTED,
            error_code=execution.last_error_code,
            correlation_id=request.correlation_id,
        )
        return RetryResult(RetryOutcome.DEAD_LETTERED, request, execution, dead_letter_message_id=message_id)
