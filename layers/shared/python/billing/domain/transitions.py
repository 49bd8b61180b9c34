"""The ten repository transition methods: which statuses each moves between and what it records."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from billing.domain.status import ExecutionStatus as S
from billing.domain.status import can_transition
from billing.domain.workflow import WorkflowPhase as P

EVENT_PREFIX = "billing.execution."
CREATED_EVENT_TYPE = EVENT_PREFIX + "created"
# Recorded while an execution stays in processing: a failed attempt and when the next one is due.
RETRY_SCHEDULED_EVENT_TYPE = EVENT_PREFIX + "retry_scheduled"
# Recorded while an execution stays in processing: the retry worker claimed attempt N and is about to resubmit.
RETRY_ATTEMPT_EVENT_TYPE = EVENT_PREFIX + "retry_attempt"
# Operational records, never status changes: a retry message parked in the dead-letter queue after the last
# attempt, and an operator moving a parked message back onto the retry queue.
DEAD_LETTERED_EVENT_TYPE = EVENT_PREFIX + "dead_lettered"
REDRIVEN_EVENT_TYPE = EVENT_PREFIX + "redriven"


class TransitionMethod(StrEnum):
    MARK_PENDING = "mark_pending"
    MARK_PROCESSING = "mark_processing"
    MARK_COMPLETED = "mark_completed"
    MARK_FAILED = "mark_failed"
    MARK_CANCELED = "mark_canceled"
    CONFIRM_FROM_PENDING = "confirm_from_pending"
    REJECT_FROM_PENDING = "reject_from_pending"
    SETTLE_FROM_PROCESSING = "settle_from_processing"
    RECONCILE = "reconcile"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """from_statuses: the status guard; to_statuses: where it may land (reconcile picks one at call time)."""

    from_statuses: tuple[S, ...]
    to_statuses: tuple[S, ...]
    event_type: str
    phase: P

    def __post_init__(self) -> None:
        for old in self.from_statuses:
            for new in self.to_statuses:
                assert can_transition(old, new), f"{old}->{new} is not in the state machine"


_M = TransitionMethod
TRANSITIONS = MappingProxyType(
    {
        _M.MARK_PENDING: TransitionSpec((S.CREATED,), (S.PENDING,), EVENT_PREFIX + "pending", P.PENDING),
        _M.MARK_PROCESSING: TransitionSpec((S.PENDING,), (S.PROCESSING,), EVENT_PREFIX + "processing", P.PROCESSING),
        _M.MARK_COMPLETED: TransitionSpec((S.PROCESSING,), (S.COMPLETED,), EVENT_PREFIX + "completed", P.COMPLETED),
        _M.MARK_FAILED: TransitionSpec((S.PROCESSING,), (S.FAILED,), EVENT_PREFIX + "failed", P.FAILED),
        # Cancel is valid from either pre-submission state, so its guard is a set, not one status.
        _M.MARK_CANCELED: TransitionSpec((S.CREATED, S.PENDING), (S.CANCELED,), EVENT_PREFIX + "canceled", P.CANCELED),
        _M.CONFIRM_FROM_PENDING: TransitionSpec((S.PENDING,), (S.COMPLETED,), EVENT_PREFIX + "confirmed", P.COMPLETED),
        _M.REJECT_FROM_PENDING: TransitionSpec((S.PENDING,), (S.FAILED,), EVENT_PREFIX + "rejected", P.FAILED),
        _M.SETTLE_FROM_PROCESSING: TransitionSpec(
            (S.PROCESSING,), (S.PENDING,), EVENT_PREFIX + "settlement_pending", P.SETTLEMENT_PENDING
        ),
        _M.RECONCILE: TransitionSpec((S.PENDING,), (S.COMPLETED, S.FAILED), EVENT_PREFIX + "reconciled", P.RECONCILED),
        # Failed before anything reached a provider: blocked by risk, rejected in review, or not authenticated.
        _M.REFUSE: TransitionSpec((S.PENDING,), (S.FAILED,), EVENT_PREFIX + "refused", P.FAILED),
    }
)
