"""Refunds with amounts: requested through the API, sent to the execution's provider, followed to a final state.

The atomic phases of a charge, once more: (1) the refund row is written `requested`, with its event and outbox row,
in one transaction whose insert the database refuses if it would take the execution past what it captured; (2) the
provider is asked with no transaction open, under an idempotency key derived from the row, so asking again after a
lost answer never refunds twice; (3) its answer moves the row (pending, succeeded, failed) with its event. A lost
answer leaves the row `requested` for reconciliation, which asks the provider (or, for a provider that cannot be
asked, sends the same request again under the same key) and moves it on. Webhooks move it too; the row's status
guard decides between them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final, Literal, assert_never
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import RefundRequest, Reversal, ReversalRepository
from billing.domain.errors import (
    ExecutionNotFound,
    ExecutionNotRefundable,
    FieldError,
    IdempotencyKeyReused,
    ProviderUnavailable,
    ValidationFailed,
)
from billing.domain.execution import Execution, validate_idempotency_key
from billing.domain.money import MAX_AMOUNT_MINOR, Money
from billing.domain.reversals import ReversalStatus
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.ports import PaymentProvider, ProviderRefund, provider_refund_key
from billing.rails.results import RefundOutcome, RefundResult

Clock = Callable[[], datetime]

# Why a refund is made, in the words card networks and providers use (Stripe's reasons, plus "other"): a closed set,
# so nothing a person types (a card number, say) ever lands in the row.
RefundReason = Literal["duplicate", "fraudulent", "requested_by_customer", "other"]

# A refund whose provider gave no usable answer is looked at again after this; one the provider accepted as pending
# is asked about at this interval (when the provider can be asked at all).
DEFAULT_FIRST_CHECK_AFTER: Final = timedelta(minutes=5)
DEFAULT_PENDING_CHECK_EVERY: Final = timedelta(minutes=30)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RefundBody(BaseModel):
    """POST /executions/{id}/refunds. Strict: no coercion, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    amount: Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_MINOR, description="Integer minor units")]
    currency: Annotated[
        str | None,
        Field(pattern=r"^[A-Z]{3}$", description="The execution's currency; may be left out", examples=["EUR"]),
    ] = None
    reason: RefundReason | None = None


@dataclass(frozen=True, slots=True)
class RefundOutcomeView:
    """created=False: an earlier request with the same key made this refund (returned as it stands now)."""

    refund: Reversal
    created: bool


def refund_fingerprint(execution_id: UUID, money: Money, reason: str | None) -> str:
    canonical = json.dumps(
        {"execution_id": str(execution_id), "amount": money.amount, "currency": money.currency, "reason": reason},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class RefundService:
    def __init__(
        self,
        executions: ExecutionRepository,
        reversals: ReversalRepository,
        providers: Mapping[str, PaymentProvider],
        *,
        first_check_after: timedelta = DEFAULT_FIRST_CHECK_AFTER,
        pending_check_every: timedelta = DEFAULT_PENDING_CHECK_EVERY,
        clock: Clock = _utc_now,
    ) -> None:
        self._executions = executions
        self._reversals = reversals
        self._providers = providers
        self._first_check_after = first_check_after
        self._pending_check_every = pending_check_every
        self._clock = clock

    def request(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        body: RefundBody,
        *,
        idempotency_key: str,
        correlation_id: str | None,
        context: WorkflowWriteContext,
    ) -> RefundOutcomeView:
        """Refund (part of) a completed execution exactly once per (tenant, idempotency key)."""
        key = validate_idempotency_key(idempotency_key)
        execution = self._executions.get(tenant_id, execution_id)
        if execution is None:
            raise ExecutionNotFound(f"execution {execution_id} not found", execution_id=str(execution_id))
        currency = body.currency or execution.currency
        if currency != execution.currency:
            raise ValidationFailed(
                [
                    FieldError(
                        "currency",
                        "currency_mismatch",
                        f"a refund is in the execution's currency, {execution.currency}",
                    )
                ]
            )
        money = Money(body.amount, currency)
        fingerprint = refund_fingerprint(execution_id, money, body.reason)
        if execution.status is not ExecutionStatus.COMPLETED or execution.provider_reference is None:
            # A replay of a refund made earlier still answers with that refund; anything else is refused here,
            # before a row is written (the database refuses it too).
            raise ExecutionNotRefundable(
                f"execution {execution_id} is {execution.status.value}; only a completed charge can be refunded",
                execution_id=str(execution_id),
            )
        request = RefundRequest(tenant_id, execution_id, money, key, fingerprint, body.reason)
        refund, created = self._reversals.request_refund(
            request, first_check_after=self._first_check_after, context=context, correlation_id=correlation_id
        )
        if refund is None:
            raise ExecutionNotRefundable(f"execution {execution_id} cannot be refunded", execution_id=str(execution_id))
        if not created:
            if refund.request_fingerprint != fingerprint or refund.execution_id != execution_id:
                raise IdempotencyKeyReused(
                    f"idempotency key {key!r} was already used with different parameters (refund {refund.id}); "
                    "use a new key for a different refund",
                    refund_id=str(refund.id),
                )
            return RefundOutcomeView(refund, created=False)
        return RefundOutcomeView(self._send(refund, execution, context, correlation_id), created=True)

    def follow(self, refund: Reversal, *, correlation_id: str | None = None) -> Reversal:
        """Reconciliation of one refund still waiting: ask the provider (or send again), apply what it says."""
        context = WorkflowWriteContext.system()
        execution = self._executions.get(refund.tenant_id, refund.execution_id)
        assert execution is not None, "executions are never deleted"
        provider = self._provider(execution)
        if not provider.polls_status:
            if refund.status is ReversalStatus.REQUESTED:
                # The provider cannot be asked, but it de-duplicates on the key: the same request again either makes
                # the refund or replays the answer to the one that was made.
                return self._send(refund, execution, context, correlation_id)
            return refund  # pending at a provider that reports by webhook only
        try:
            found = provider.check_refund(
                self._provider_refund(refund, execution), refund_reference=refund.provider_reference
            )
        except ProviderUnavailable:
            self._reversals.postpone(refund, self._clock() + self._first_check_after)
            return refund
        if found.outcome is RefundOutcome.NOT_FOUND:
            if refund.status is ReversalStatus.REQUESTED:
                return self._send(refund, execution, context, correlation_id)
            return refund
        return self._apply(refund, found, provider, context, correlation_id)

    def _send(
        self, refund: Reversal, execution: Execution, context: WorkflowWriteContext, correlation_id: str | None
    ) -> Reversal:
        provider = self._provider(execution)
        request = self._provider_refund(refund, execution)
        result = provider.refund(request, provider_refund_key(request))
        return self._apply(refund, result, provider, context, correlation_id)

    def _apply(
        self,
        refund: Reversal,
        result: RefundResult,
        provider: PaymentProvider,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> Reversal:
        metadata = {"provider_request_id": result.request_id} if result.request_id else {}
        match result.outcome:
            case RefundOutcome.SUCCEEDED:
                moved = self._reversals.move(
                    refund, ReversalStatus.SUCCEEDED, provider_reference=result.provider_reference,
                    context=context, correlation_id=correlation_id, metadata=metadata,
                )  # fmt: skip
            case RefundOutcome.PENDING:
                if refund.status is ReversalStatus.PENDING:
                    return refund
                # A provider that cannot be asked reports by webhook only: nothing to look at on a schedule.
                due = self._clock() + self._pending_check_every if provider.polls_status else None
                moved = self._reversals.move(
                    refund, ReversalStatus.PENDING, provider_reference=result.provider_reference, next_check_at=due,
                    context=context, correlation_id=correlation_id, metadata=metadata,
                )  # fmt: skip
            case RefundOutcome.FAILED:
                moved = self._reversals.move(
                    refund, ReversalStatus.FAILED, provider_reference=result.provider_reference,
                    failure_code=result.error_code, context=context, correlation_id=correlation_id, metadata=metadata,
                )  # fmt: skip
            case RefundOutcome.TRANSIENT_ERROR | RefundOutcome.UNKNOWN | RefundOutcome.NOT_FOUND:
                # Nothing known to have happened (or nothing at all): reconciliation looks again, under the same key.
                self._reversals.postpone(refund, self._clock() + self._first_check_after)
                return refund
            case _:
                assert_never(result.outcome)
        if moved is not None:
            return moved
        # A webhook (or another worker) moved it first; report it as it stands.
        current = self._reversals.get(refund.tenant_id, refund.id)
        assert current is not None, "reversals are never deleted"
        return current

    def _provider(self, execution: Execution) -> PaymentProvider:
        return self._providers[execution.payment_provider].for_tenant(execution.tenant_id)

    @staticmethod
    def _provider_refund(refund: Reversal, execution: Execution) -> ProviderRefund:
        assert refund.money is not None
        assert execution.provider_reference is not None
        return ProviderRefund(
            tenant_id=refund.tenant_id,
            execution_id=refund.execution_id,
            refund_id=refund.id,
            payment_reference=execution.provider_reference,
            amount=refund.money.amount,
            currency=refund.money.currency,
            reason=refund.reason,
        )


@dataclass(frozen=True, slots=True)
class RefundFollowUp:
    """What one reconciliation pass over refunds did: how many it looked at, by the status each was left in."""

    by_status: Mapping[str, int]

    @property
    def examined(self) -> int:
        return sum(self.by_status.values())


class RefundFollower:
    """Reconciliation of refunds: claims those due for a look (any tenant), follows each with no transaction open."""

    def __init__(
        self, reversals: ReversalRepository, refunds: RefundService, *, batch_size: int = 50, lease: timedelta
    ) -> None:
        self._reversals = reversals
        self._refunds = refunds
        self._batch_size = batch_size
        self._lease = lease

    def run(self, time_left_ms: Callable[[], float]) -> RefundFollowUp:
        """Follow due refunds until none is due or time runs out; a refund claimed but not reached is looked at again
        once its lease lapses."""
        counts: dict[str, int] = {}
        while time_left_ms() > 0:
            due = self._reversals.claim_due(limit=self._batch_size, lease=self._lease)
            if not due:
                break
            for refund in due:
                if time_left_ms() <= 0:
                    break
                after = self._refunds.follow(refund)
                counts[after.status.value] = counts.get(after.status.value, 0) + 1
        return RefundFollowUp(counts)
