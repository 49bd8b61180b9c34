"""What a provider's reversal report does to the reversals of a completed execution (webhook processing's part).

A report about a refund the engine requested moves that refund (found by the provider's refund reference, else by
our reversal id the provider echoes back); any other report is recorded as a reversal the provider made, with its
amount. Stripe's `charge.refunded` without its refund list carries only the cumulative refunded amount: what the
engine's own refunds do not cover is recorded as a refund made at the provider. Runs inside the webhook's
transaction, beside the inbox claim.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final
from uuid import UUID

from billing.db.reversal_repository import ProviderReversal, Reversal, ReversalRepository
from billing.db.webhook_inbox import ExecutionRef
from billing.domain.money import Money
from billing.domain.reversals import (
    REFUND_KINDS,
    ReversalKind,
    ReversalReport,
    ReversalStatus,
    is_final,
)
from billing.domain.workflow import WorkflowWriteContext
from billing.webhooks.events import WebhookEvent

# Stripe's charge.refunded: without refunds.data, its amount is the charge's amount_refunded so far.
CUMULATIVE_REFUND_EVENT_TYPE: Final = "charge.refunded"


def report_of(event: WebhookEvent, execution: ExecutionRef) -> ReversalReport:
    """The event's reversal report; a provider that names no amount (GoCardless) reverses the whole payment."""
    if event.reversal is not None:
        return event.reversal
    if execution.amount is None or execution.currency is None:
        raise ValueError("a report without an amount needs the execution's amount")
    kind = ReversalKind.REFUND if "refund" in event.event_type.lower() else ReversalKind.CHARGEBACK
    return ReversalReport(
        kind, Money(execution.amount, execution.currency), ReversalStatus.SUCCEEDED, reason=event.failure_code
    )


class ReversalApplier:
    def __init__(self, reversals: ReversalRepository) -> None:
        self._reversals = reversals

    def apply(
        self,
        execution: ExecutionRef,
        event: WebhookEvent,
        *,
        occurred_at: datetime,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> Reversal | None:
        """Move the engine's refund or record the provider's reversal; None when there was nothing left to do (this
        event was applied before, or the refund it reports is final already)."""
        report = report_of(event, execution)
        metadata = {"provider_event_id": event.event_id, "provider_event_type": event.event_type}
        ours = self._known(execution, event.provider, report)
        if ours is not None:
            if is_final(ours.status) or report.status is ours.status:
                return None
            return self._reversals.move(
                ours,
                report.status,
                provider_reference=report.reference,
                failure_code=report.reason or "provider_reported_failure",
                context=context,
                correlation_id=correlation_id,
                metadata=metadata,
            )
        if report.status is ReversalStatus.FAILED:
            # A refund we never asked for that failed moved no money: nothing to record beyond the inbox row.
            return None
        money = report.money
        if event.event_type == CUMULATIVE_REFUND_EVENT_TYPE and report.reference is None:
            uncovered = self._uncovered(execution, report.money)
            if uncovered is None:
                return None
            money = uncovered
        return self._reversals.record_provider_reversal(
            ProviderReversal(
                tenant_id=execution.tenant_id,
                execution_id=execution.execution_id,
                provider=event.provider,
                provider_event_id=event.event_id,
                provider_event_type=event.event_type,
                kind=report.kind,
                money=money,
                status=report.status,
                provider_reference=report.reference,
                reason=report.reason,
                occurred_at=occurred_at,
            ),
            context=context,
            correlation_id=correlation_id,
            metadata=metadata,
        )

    def _known(self, execution: ExecutionRef, provider: str, report: ReversalReport) -> Reversal | None:
        """The engine's own refund this report is about, if it is about one."""
        if report.kind not in REFUND_KINDS:
            return None
        found: Reversal | None = None
        if report.reference is not None:
            found = self._reversals.by_provider_reference(execution.tenant_id, provider, report.reference, REFUND_KINDS)
        if found is None and report.our_reference is not None:
            reversal_id = _uuid_or_none(report.our_reference)
            if reversal_id is not None:
                found = self._reversals.get(execution.tenant_id, reversal_id)
        # A reference that names another execution's refund is not about this one. A refund made at the provider and
        # reported pending moves on like ours when the provider reports it again.
        if found is None or found.execution_id != execution.execution_id:
            return None
        return found

    def _uncovered(self, execution: ExecutionRef, refunded_so_far: Money) -> Money | None:
        """The part of a cumulative refunded amount that no recorded refund (not failed) accounts for."""
        covered = sum(
            r.money.amount
            for r in self._reversals.of_execution(execution.tenant_id, execution.execution_id)
            if r.money is not None and r.kind in REFUND_KINDS and r.status is not ReversalStatus.FAILED
        )
        rest = refunded_so_far.amount - covered
        return Money(rest, refunded_so_far.currency) if rest > 0 else None


def _uuid_or_none(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None
