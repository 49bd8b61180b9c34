"""Our side of a settled item: the execution a provider reference names, with the reversals recorded against it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final, NamedTuple
from uuid import UUID

from billing.domain.reversals import ReversalKind
from billing.domain.status import ExecutionStatus
from billing.settlement.formats.records import RecordKind


@dataclass(frozen=True, slots=True)
class RecordedReversal:
    """A reversal of the execution that has not failed (billing.execution_reversals), in the order it was recorded.

    `amount` is None for rows recorded before reversals carried amounts (kind 'unspecified').
    """

    kind: ReversalKind
    amount: int | None


class OurExecution(NamedTuple):
    """An execution as reconciliation needs it; `reversals` are in recorded order (recorded_at, id).

    A named tuple (immutable): a report reads up to two per provider row, and a tuple is built from one positional
    tuple at a fraction of a frozen dataclass's cost. The database lookups (billing.db.settlement_queries)
    fill submitted_at only where describe() shows it (a pending execution) and finished_at only in the period
    scan: matching reads neither.
    """

    tenant_id: UUID
    execution_id: UUID
    provider: str
    provider_reference: str | None
    amount: int
    currency: str
    status: ExecutionStatus
    submitted_at: datetime | None
    finished_at: datetime | None
    reversals: tuple[RecordedReversal, ...] = ()

    def describe(self) -> str:
        state = str(self.status)
        if self.status is ExecutionStatus.PENDING and self.submitted_at is not None:
            state = "pending (awaiting settlement)"
        if self.reversals:
            state += " with a reversal recorded"
        return state

    def named_by_our_reference(self) -> bool:
        """True when the provider reference stored is our own execution id (Adyen gave no pspReference yet)."""
        return self.provider_reference == str(self.execution_id)


# Which recorded reversals a provider's reversal line can be: a refund is what we asked for (or Adyen's
# CANCEL_OR_REFUND of it); each dispute movement is its own kind. `unspecified` rows predate amounts and may stand
# for any of them (they are matched last, once each).
REVERSAL_KINDS_OF: Final = MappingProxyType(
    {
        RecordKind.REFUNDED: frozenset({ReversalKind.REFUND, ReversalKind.CANCEL_OR_REFUND}),
        RecordKind.CHARGEBACK: frozenset({ReversalKind.CHARGEBACK}),
        RecordKind.SECOND_CHARGEBACK: frozenset({ReversalKind.SECOND_CHARGEBACK}),
        RecordKind.CHARGEBACK_REVERSED: frozenset({ReversalKind.CHARGEBACK_REVERSED}),
    }
)
