"""Drives an execution from created to a final state (or to settlement pending / a scheduled retry).

The phases follow the atomic-phases pattern: each status change is its own committed transaction, and the only
external call (the provider submit) happens between them, after `mark_processing` made this caller the single
owner. Whoever loses that status guard never submits; a stalled execution (its first driver died before
submitting) is resumed by the next caller with the same key.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import assert_never

from billing.authentication.flow import AuthenticationStep, StepKind
from billing.db.execution_repository import ExecutionRepository, QueuedTransition
from billing.domain.backoff import BackoffPolicy
from billing.domain.errors import TransitionConflict
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.domain.transitions import RETRY_SCHEDULED_EVENT_TYPE
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.adapters import adapter_for
from billing.rails.ports import PaymentProvider, RailAdapter
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    Decision,
    NextAction,
    ProviderError,
    SubmitOutcome,
    SubmitResult,
)
from billing.rails.three_ds import NO_THREE_DS, ThreeDSecureInstruction, ThreeDSecureMode
from billing.risk.gate import NO_SIGNALS, ClientSignals
from billing.services.ports import ExecutionObserver, RetryRequest, RetryScheduler
from billing.services.pre_submission import PreSubmission

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Driven:
    """Where a drive left the execution, and what the customer must do next when the charge waits for them.

    `next_action` is this drive's own provider answer, client secret included: it is handed to the caller that
    submitted the charge and never stored (the timeline keeps NextAction.to_stored()).
    """

    execution: Execution
    next_action: NextAction | None = None


class ExecutionDriver:
    def __init__(
        self,
        repository: ExecutionRepository,
        providers: Mapping[str, PaymentProvider],
        retries: RetryScheduler,
        observer: ExecutionObserver,
        *,
        backoff: BackoffPolicy | None = None,
        clock: Clock = _utc_now,
        jitter: Callable[[float, float], float] = random.uniform,
        pre_submission: PreSubmission | None = None,
    ) -> None:
        self._repository = repository
        # Risk and 3-D Secure before the first submission; None: submitted as created (tools, some tests).
        self._pre_submission = pre_submission
        self._providers = providers
        self._retries = retries
        self._observer = observer
        self._backoff = backoff or BackoffPolicy()
        self._clock = clock
        # Injectable so tests assert the exact backoff schedule instead of a random draw.
        self._jitter = jitter

    def drive(self, execution: Execution, *, correlation_id: str | None, context: WorkflowWriteContext) -> Execution:
        """Advance the execution as far as it can go now; calling it again for the same execution is safe."""
        return self.drive_with_action(execution, correlation_id=correlation_id, context=context).execution

    def drive_with_action(
        self,
        execution: Execution,
        *,
        correlation_id: str | None,
        context: WorkflowWriteContext,
        signals: ClientSignals = NO_SIGNALS,
        step: AuthenticationStep | None = None,
    ) -> Driven:
        """drive(), and the customer's next action if this call submitted a charge that waits for them (or holds it
        for 3-D Secure). `step`: the authentication just completed (a challenge's result), instead of asking anew."""
        started = time.perf_counter()
        current = execution
        next_action: NextAction | None = None
        if current.status is ExecutionStatus.CREATED:
            current = self._guarded(lambda: self._repository.mark_pending(
                current.tenant_id, current.id, context, correlation_id=correlation_id), current)  # fmt: skip
        if current.status is ExecutionStatus.PENDING and current.submitted_at is None:
            claim: QueuedTransition | None = None
            if step is None and self._pre_submission is not None:
                step, claim = self._pre_submission.check_and_claim(
                    current, signals, context=context, correlation_id=correlation_id, claim_with=self._repository
                )
            if step is not None and step.kind is StepKind.WAIT:
                return Driven(current, step.next_action)
            if step is not None and step.kind is StepKind.REFUSE:
                assert step.error_code is not None
                refused = current
                current = self._guarded(lambda: self._repository.refuse(
                    refused.tenant_id, refused.id, context, error_code=step.error_code or "",
                    correlation_id=correlation_id), current)  # fmt: skip
                self._observer.execution_result(
                    current, duration_ms=(time.perf_counter() - started) * 1000, correlation_id=correlation_id
                )
                return Driven(current)
            try:
                current = (
                    claim.result()
                    if claim is not None
                    else self._repository.mark_processing(
                        current.tenant_id, current.id, context, correlation_id=correlation_id
                    )
                )
            except TransitionConflict:
                # Another caller owns the submission: report where it is, never submit twice.
                return Driven(self._reload(current))
            three_ds = step.three_ds if step is not None else NO_THREE_DS
            submitted = self._submit_with_action(
                current, correlation_id=correlation_id, context=context, three_ds=three_ds
            )
            current, next_action = submitted.execution, submitted.next_action
        self._observer.execution_result(
            current, duration_ms=(time.perf_counter() - started) * 1000, correlation_id=correlation_id
        )
        return Driven(current, next_action)

    def resubmit(self, execution: Execution, *, correlation_id: str | None, context: WorkflowWriteContext) -> Execution:
        """Submit again under the same provider idempotency key (the retry worker, after claiming the attempt)."""
        started = time.perf_counter()
        three_ds = (
            self._pre_submission.resubmission(execution, context=context, correlation_id=correlation_id)
            if self._pre_submission is not None
            else NO_THREE_DS
        )
        current = self._submit_with_action(
            execution, correlation_id=correlation_id, context=context, three_ds=three_ds
        ).execution
        self._observer.execution_result(
            current, duration_ms=(time.perf_counter() - started) * 1000, correlation_id=correlation_id
        )
        return current

    def _submit(self, execution: Execution, *, correlation_id: str | None, context: WorkflowWriteContext) -> Execution:
        return self._submit_with_action(execution, correlation_id=correlation_id, context=context).execution

    def _submit_with_action(
        self,
        execution: Execution,
        *,
        correlation_id: str | None,
        context: WorkflowWriteContext,
        three_ds: ThreeDSecureInstruction = NO_THREE_DS,
    ) -> Driven:
        adapter = adapter_for(execution, self._providers)
        started = time.perf_counter()
        result = adapter.submit(execution, three_ds)
        if three_ds.mode is ThreeDSecureMode.REQUEST and self._pre_submission is not None:
            # The provider ran its own 3-D Secure: what it reported fills the execution's authentication.
            self._pre_submission.three_ds.record_provider_result(
                execution, result.authentication, context=context, correlation_id=correlation_id
            )
        self._observer.rail_call(
            execution,
            outcome=result.outcome.value,
            attempt=execution.attempt_count,
            duration_ms=(time.perf_counter() - started) * 1000,
            correlation_id=correlation_id,
        )
        applied = self._guarded(lambda: self._apply(execution, adapter, result, correlation_id, context), execution)
        return Driven(applied, result.next_action if applied.status is ExecutionStatus.PENDING else None)

    def _apply(
        self,
        execution: Execution,
        adapter: RailAdapter,
        result: SubmitResult,
        correlation_id: str | None,
        context: WorkflowWriteContext,
    ) -> Execution:
        repo, tenant, eid = self._repository, execution.tenant_id, execution.id
        details = {"correlation_id": correlation_id}
        match result.outcome:
            case SubmitOutcome.SUCCEEDED:
                return repo.mark_completed(
                    tenant, eid, context, provider_reference=result.provider_reference, **details
                )
            case SubmitOutcome.FAILED:
                return repo.mark_failed(
                    tenant,
                    eid,
                    context,
                    error_code=result.error_code,
                    provider_reference=result.provider_reference,
                    **details,
                )
            case SubmitOutcome.PENDING_SETTLEMENT:
                assert result.provider_reference is not None
                return repo.settle_from_processing(
                    tenant, eid, context, provider_reference=result.provider_reference, **details
                )
            case SubmitOutcome.REQUIRES_ACTION:
                # The customer must authenticate at the provider; the charge settles (or fails) from there and
                # is followed like any asynchronous payment, by webhook or reconciliation.
                assert result.provider_reference is not None
                return repo.settle_from_processing(
                    tenant,
                    eid,
                    context,
                    provider_reference=result.provider_reference,
                    metadata={
                        "requires_action": True,
                        "action_url": result.action_url,
                        **({"next_action": result.next_action.to_stored()} if result.next_action else {}),
                    },
                    **details,
                )
            case SubmitOutcome.TRANSIENT_ERROR | SubmitOutcome.UNKNOWN:
                return self._retry_or_give_up(execution, adapter, result, correlation_id, context)
            case _:
                assert_never(result.outcome)

    def _retry_or_give_up(
        self,
        execution: Execution,
        adapter: RailAdapter,
        result: SubmitResult,
        correlation_id: str | None,
        context: WorkflowWriteContext,
    ) -> Execution:
        error_code = result.error_code or OUTCOME_UNKNOWN_CODE
        retries_used = execution.attempt_count - 1
        if retries_used < adapter.max_retries:
            delay = self._backoff.delay(retries_used + 1, self._jitter)
            not_before = self._clock() + timedelta(seconds=delay)
            recorded = self._repository.record_retry_scheduled(
                execution.tenant_id,
                execution.id,
                context,
                attempt=execution.attempt_count,
                error_code=error_code,
                next_attempt_at=not_before,
                correlation_id=correlation_id,
            )
            self._retries.schedule(
                RetryRequest(execution.tenant_id, execution.id, execution.attempt_count + 1, not_before, correlation_id)
            )
            return recorded
        if result.outcome is SubmitOutcome.UNKNOWN or self._an_earlier_answer_was_lost(execution, adapter):
            # Money may have moved: never fail it blindly. It stays in processing for reconciliation, which asks
            # the provider by idempotency key and settles it either way. A transient error on this attempt says
            # nothing about an earlier attempt whose answer was lost (the provider may simply be unreachable now).
            return execution
        return self._repository.mark_failed(
            execution.tenant_id, execution.id, context, error_code=error_code, correlation_id=correlation_id
        )

    def _an_earlier_answer_was_lost(self, execution: Execution, adapter: RailAdapter) -> bool:
        """True if an earlier attempt of the execution ended without a usable answer, so a charge may exist."""
        return any(
            event.type == RETRY_SCHEDULED_EVENT_TYPE
            and adapter.decision_for(ProviderError(str(event.metadata["error_code"]), "earlier attempt"))
            is Decision.RECONCILE_LATER
            for event in self._repository.events(execution.tenant_id, execution.id)
        )

    def _guarded(self, write: Callable[[], Execution], fallback: Execution) -> Execution:
        """Run a transition; if another caller moved the execution first, return where it is now."""
        try:
            return write()
        except TransitionConflict:
            return self._reload(fallback)

    def _reload(self, execution: Execution) -> Execution:
        current = self._repository.get(execution.tenant_id, execution.id)
        assert current is not None, "executions are never deleted"
        return current
