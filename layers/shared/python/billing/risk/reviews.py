"""Reviews: an operator's decision on a charge the assessment held, or the timeout's when nobody decided.

One decision per execution (billing.risk_reviews' key): of two operators deciding at once, one wins and the other
gets RiskReviewConflict. The decision, its lifecycle event and the audit entry (PCI DSS 10.2.1.2: an action by
someone with administrative access) commit together; a rejection fails the execution in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

import psycopg

from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.recorder import record_audit_event
from billing.db.attempts import annotate
from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.errors import RiskReviewConflict
from billing.domain.execution import Execution
from billing.domain.transitions import EVENT_PREFIX
from billing.domain.workflow import WorkflowWriteContext
from billing.risk.postgres import AssessmentLog, AssessmentRecord

REVIEW_APPROVED_EVENT_TYPE: Final = EVENT_PREFIX + "review_approved"
REVIEW_REJECTED_CODE: Final = "risk_review_rejected"
REVIEW_EXPIRED_CODE: Final = "risk_review_expired"


class ReviewDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    # Nobody decided within the tenant's review timeout: the charge is refused, never sent unreviewed.
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Review:
    execution_id: UUID
    assessment_id: UUID
    decision: ReviewDecision
    decided_by: str
    note: str | None
    decided_at: datetime


def _review(row: dict[str, Any]) -> Review:
    return Review(
        row["execution_id"], row["assessment_id"], ReviewDecision(row["decision"]), row["decided_by"], row["note"],
        row["decided_at"],
    )  # fmt: skip


_OF = "select * from billing.risk_reviews where tenant_id = %s and execution_id = %s"
_INSERT = """
insert into billing.risk_reviews (tenant_id, execution_id, assessment_id, decision, decided_by, note)
values (%s, %s, %s, %s, %s, %s) returning *
"""
# Executions held for review (their latest assessment says review, nobody decided) past their tenant's timeout,
# every tenant's. The timeout is the review_timeout_minutes setting of the rule set at the
# version that decided, falling back to the default when that version is the engine's.
_OVERDUE = """
select a.tenant_id, a.execution_id, a.id as assessment_id
  from billing.risk_assessments a
  join billing.billing_executions e on e.tenant_id = a.tenant_id and e.id = a.execution_id
  left join billing.risk_rule_sets s on s.tenant_id = a.tenant_id and s.version = a.rule_set_version
 where a.decision = 'review' and e.status = 'pending' and e.submitted_at is null
   and not exists (select 1 from billing.risk_reviews r where r.tenant_id = a.tenant_id
                    and r.execution_id = a.execution_id)
   and a.assessed_at < coalesce(%(as_of)s, clock_timestamp()) - make_interval(mins =>
       coalesce((s.rules -> 'settings' ->> 'review_timeout_minutes')::int, %(default_minutes)s))
 order by a.assessed_at
 limit %(limit)s
"""


@dataclass(frozen=True, slots=True)
class OverdueReview:
    tenant_id: UUID
    execution_id: UUID
    assessment_id: UUID


class ReviewStore:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def held_by(self, tenant_id: UUID, execution_id: UUID) -> AssessmentRecord | None:
        """The assessment holding the execution for review (its latest, if that said review and nobody decided)."""
        with tenant_transaction(self._conn, tenant_id):
            if self._conn.execute(_OF, [tenant_id, execution_id]).fetchone() is not None:
                return None
            kept = AssessmentLog(self._conn).of_execution(tenant_id, execution_id)
        latest = kept[-1] if kept else None
        return latest if latest is not None and latest.decision == "review" else None

    def of(self, tenant_id: UUID, execution_id: UUID) -> Review | None:
        with tenant_transaction(self._conn, tenant_id):
            row = self._conn.execute(_OF, [tenant_id, execution_id]).fetchone()
        return _review(row) if row else None

    def decide(
        self,
        execution: Execution,
        assessment_id: UUID,
        decision: ReviewDecision,
        *,
        decided_by: str,
        note: str | None,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> tuple[Review, Execution]:
        """Keep the decision with its event and audit entry; a rejection or expiry also fails the execution."""
        conn, tenant = self._conn, execution.tenant_id
        try:
            with translated_guard_errors(), tenant_transaction(conn, tenant):
                row = conn.execute(
                    _INSERT, [tenant, execution.id, assessment_id, decision.value, decided_by, note]
                ).fetchone()
                assert row is not None
                if decision is ReviewDecision.APPROVE:
                    annotate(
                        conn, tenant, execution.id, REVIEW_APPROVED_EVENT_TYPE,
                        {"assessment_id": str(assessment_id), "decided_by": decided_by},
                        context=context, correlation_id=correlation_id,
                    )  # fmt: skip
                    current = execution
                else:
                    code = REVIEW_REJECTED_CODE if decision is ReviewDecision.REJECT else REVIEW_EXPIRED_CODE
                    current = ExecutionRepository(conn).refuse(
                        tenant, execution.id, context, error_code=code, correlation_id=correlation_id,
                        metadata={"assessment_id": str(assessment_id), "decided_by": decided_by},
                    )  # fmt: skip
                record_audit_event(
                    conn,
                    AuditEvent(
                        event_type=AuditEventType.OPERATOR_ACTION,
                        outcome=AuditOutcome.SUCCEEDED,
                        actor=decided_by,
                        tenant_id=tenant,
                        resource_type="billing_execution",
                        resource_id=str(execution.id),
                        purpose="risk_review",
                        correlation_id=correlation_id,
                        details={"decision": decision.value, "assessment_id": str(assessment_id)},
                    ),
                )
        except psycopg.errors.UniqueViolation:
            raise RiskReviewConflict(
                f"execution {execution.id} was reviewed already", execution_id=str(execution.id)
            ) from None
        return _review(row), current

    def overdue(self, *, default_minutes: int, limit: int = 100, as_of: datetime | None = None) -> list[OverdueReview]:
        """Held executions whose review deadline is before `as_of` (None: the database's clock)."""
        params = {"default_minutes": default_minutes, "limit": limit, "as_of": as_of}
        with system_transaction(self._conn):
            rows = self._conn.execute(_OVERDUE, params).fetchall()
        return [OverdueReview(r["tenant_id"], r["execution_id"], r["assessment_id"]) for r in rows]
