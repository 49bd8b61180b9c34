"""Ends what waits before submission for too long: reviews nobody decided and authentications nobody finished.

Run by the reconciliation worker on its schedule. A review past its tenant's timeout is decided `expired` and the
charge refused (risk_review_expired): never sent unreviewed. An engine-run authentication past its deadline (the
customer left the challenge page) becomes `expired`, its ACS challenge is closed so a late code changes nothing,
and the charge is refused (authentication_expired). Each is one transaction with its lifecycle event and outbox
row; a concurrent writer (the customer finishing at the last second) wins or loses cleanly on the row's guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from billing.authentication.flow import AUTHENTICATED_EVENT_TYPE, authentication_summary
from billing.authentication.store import AuthenticationRecord, AuthenticationRepository, Outcome
from billing.db.attempts import annotate
from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.tenancy import tenant_transaction
from billing.domain.errors import RiskReviewConflict, TransitionConflict
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.risk.reviews import ReviewDecision, ReviewStore
from billing.risk.rules import DEFAULT_REVIEW_TIMEOUT_MINUTES

AUTHENTICATION_EXPIRED_CODE: Final = "authentication_expired"
# transStatusReason 14: transaction timed out at the ACS (the customer never finished).
TIMED_OUT_REASON: Final = "14"
_CLOSE_CHALLENGE = """
update sandbox_provider.acs_challenges set status = 'timed_out', updated_at = clock_timestamp()
 where acs_trans_id = %s and status = 'open'
"""


@dataclass(frozen=True, slots=True)
class SweepResult:
    reviews_expired: int
    authentications_expired: int


class PreSubmissionSweep:
    def __init__(self, conn: Connection, *, default_review_minutes: int = DEFAULT_REVIEW_TIMEOUT_MINUTES) -> None:
        self._conn = conn
        self._default_review_minutes = default_review_minutes
        self._context = WorkflowWriteContext.system()

    def run(self, *, limit: int = 100, as_of: datetime | None = None) -> SweepResult:
        """End what is overdue at `as_of` (None: now, on the database's clock)."""
        return SweepResult(self._expire_reviews(limit, as_of), self._expire_authentications(limit, as_of))

    def _expire_reviews(self, limit: int, as_of: datetime | None) -> int:
        store, repository = ReviewStore(self._conn), ExecutionRepository(self._conn)
        expired = 0
        for overdue in store.overdue(default_minutes=self._default_review_minutes, limit=limit, as_of=as_of):
            execution = repository.get(overdue.tenant_id, overdue.execution_id)
            if execution is None or execution.status is not ExecutionStatus.PENDING or execution.submitted_at:
                continue
            try:
                store.decide(
                    execution, overdue.assessment_id, ReviewDecision.EXPIRED, decided_by=self._context.actor,
                    note="nobody decided within the review timeout", context=self._context, correlation_id=None,
                )  # fmt: skip
            except (TransitionConflict, RiskReviewConflict):
                continue
            expired += 1
        return expired

    def _expire_authentications(self, limit: int, as_of: datetime | None) -> int:
        repository = AuthenticationRepository(self._conn)
        expired = 0
        for record in repository.overdue(limit, as_of=as_of):
            if record.performed_by == "engine" and self._expire(repository, record):
                expired += 1
        return expired

    def _expire(self, repository: AuthenticationRepository, record: AuthenticationRecord) -> bool:
        executions = ExecutionRepository(self._conn)
        with tenant_transaction(self._conn, record.tenant_id):
            moved = repository.move(
                record, Outcome(state="expired", trans_status_reason=TIMED_OUT_REASON, liability_shift=False)
            )
            if moved is None:
                return False  # finished meanwhile
            if record.acs_trans_id:
                self._conn.execute(_CLOSE_CHALLENGE, [record.acs_trans_id])
            execution = executions.get(record.tenant_id, record.execution_id)
            if execution is not None and execution.status is ExecutionStatus.PENDING and not execution.submitted_at:
                executions.refuse(
                    record.tenant_id, record.execution_id, self._context, error_code=AUTHENTICATION_EXPIRED_CODE
                )
            # After the refusal: an annotation names the status the execution ends this transaction in.
            annotate(
                self._conn, record.tenant_id, record.execution_id, AUTHENTICATED_EVENT_TYPE,
                authentication_summary(moved), context=self._context, correlation_id=None,
            )  # fmt: skip
        return True
