"""Attempt bookkeeping of the retry path: claiming a retry attempt, and recording dead letters and redrives.

Each write is one statement that records its lifecycle event and outbox row beside it (the repository's
`companion_ctes`), in a tenant-scoped transaction, exactly like ExecutionRepository's transitions. None
of them changes the status, so none writes a workflow row. `annotate` is the one way to record an operational
event on an execution; the webhook path uses it too (billing.db.webhook_inbox.AmountMismatches).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb

from billing.db.connection import Connection
from billing.db.execution_repository import execution_from_row, write_statement
from billing.db.tenancy import tenant_transaction
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.domain.transitions import DEAD_LETTERED_EVENT_TYPE, REDRIVEN_EVENT_TYPE, RETRY_ATTEMPT_EVENT_TYPE
from billing.domain.workflow import WorkflowWriteContext

# The attempt number is the guard: attempt N may start only while the execution is in processing with N-1 attempts
# made. Of two consumers holding the same message (SQS delivers at least once) exactly one moves the count; the
# other updates nothing and never resubmits. The retry is no longer scheduled once it runs, so next_attempt_at
# clears, and updated_at restarts the stuck-in-processing clock of the reconciliation worker.
_CLAIM_ATTEMPT = """
    update billing.billing_executions e
       set attempt_count = %(attempt)s, updated_at = clock_timestamp(), next_attempt_at = null
     where e.tenant_id = %(tenant_id)s and e.id = %(execution_id)s and e.status = %(old_status)s
       and e.attempt_count = %(previous_attempts)s
    returning e.*
"""
CLAIM_ATTEMPT_STATEMENT = write_statement(_CLAIM_ATTEMPT, workflow=False)

# An operational record on an execution in any status, terminal ones included: the row is only read, never
# updated (the immutability trigger would refuse that), but it is locked. Every other write to an execution
# updates its row before it takes an outbox id, which is what keeps an execution's outbox rows committing in id
# order (billing.outbox.relay, rule 1); holding the same lock keeps that true for these rows too.
ANNOTATION_STATEMENT = write_statement(
    """
    select e.* from billing.billing_executions e
     where e.tenant_id = %(tenant_id)s and e.id = %(execution_id)s
       for update
    """,
    workflow=False,
    old_status="w.status",
    at="clock_timestamp()",
)

_ANNOTATED_AT_ATTEMPT = """
select exists (
    select 1 from billing.billing_execution_events
     where tenant_id = %(tenant_id)s and execution_id = %(execution_id)s and type = %(event_type)s
       and metadata ->> 'attempt' = %(attempt)s
) as found
"""


class AttemptLedger:
    """Retry-attempt writes on one connection (the retry worker's, or the DLQ tooling's)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def claim_attempt(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        attempt: int,
        correlation_id: str | None = None,
    ) -> Execution | None:
        """Make this caller the only one to run attempt `attempt`; None if the execution moved on or it is taken."""
        if attempt < 2:
            raise ValueError("the first attempt is the drive itself; retries are numbered from 2")
        event_id = uuid4()
        params = {
            "tenant_id": tenant_id,
            "execution_id": execution_id,
            "old_status": ExecutionStatus.PROCESSING.value,
            "attempt": attempt,
            "previous_attempts": attempt - 1,
            "event_id": event_id,
            "event_type": RETRY_ATTEMPT_EVENT_TYPE,
            "event_metadata": Jsonb({"attempt": attempt}),
            "actor": context.actor,
            "correlation_id": correlation_id,
        }
        return self._write(CLAIM_ATTEMPT_STATEMENT, params)

    def record_dead_lettered(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        attempt: int,
        message_id: str | None,
        reason: str,
        error_code: str | None,
        correlation_id: str | None = None,
    ) -> Execution | None:
        """Record that the retry message of `attempt` was parked in the dead-letter queue; None if no execution."""
        metadata = {"attempt": attempt, "message_id": message_id, "reason": reason, "error_code": error_code}
        return self._annotate(tenant_id, execution_id, DEAD_LETTERED_EVENT_TYPE, metadata, context, correlation_id)

    def record_redriven(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        attempt: int,
        message_id: str,
        new_message_id: str,
        correlation_id: str | None = None,
    ) -> Execution | None:
        """Record that an operator moved the parked message of `attempt` back to the retry queue."""
        metadata = {"attempt": attempt, "message_id": message_id, "new_message_id": new_message_id}
        return self._annotate(tenant_id, execution_id, REDRIVEN_EVENT_TYPE, metadata, context, correlation_id)

    def was_dead_lettered(self, tenant_id: UUID, execution_id: UUID, *, attempt: int) -> bool:
        """True if the retry message of `attempt` is already recorded as parked in the dead-letter queue."""
        params = {
            "tenant_id": tenant_id,
            "execution_id": execution_id,
            "event_type": DEAD_LETTERED_EVENT_TYPE,
            "attempt": str(attempt),
        }
        conn = self._conn
        with conn.pipeline(), tenant_transaction(conn, tenant_id):
            cursor = conn.execute(_ANNOTATED_AT_ATTEMPT, params)
        row = cursor.fetchone()
        return bool(row and row["found"])

    def _annotate(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        event_type: str,
        metadata: dict[str, Any],
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> Execution | None:
        return annotate(
            self._conn, tenant_id, execution_id, event_type, metadata, context=context, correlation_id=correlation_id
        )

    def _write(self, statement: str, params: dict[str, Any]) -> Execution | None:
        return _write(self._conn, statement, params)


def annotate(
    conn: Connection,
    tenant_id: UUID,
    execution_id: UUID,
    event_type: str,
    metadata: dict[str, Any],
    *,
    context: WorkflowWriteContext,
    correlation_id: str | None,
) -> Execution | None:
    """Record an annotation event (kind 'annotation': old = new = the current status) and its outbox row, in one
    statement that locks the unchanged execution; the execution as it stands, or None if there is none."""
    params = _annotation_params(tenant_id, execution_id, event_type, metadata, context, correlation_id)
    return _write(conn, ANNOTATION_STATEMENT, params)


def queue_annotation(
    conn: Connection,
    tenant_id: UUID,
    execution_id: UUID,
    event_type: str,
    metadata: dict[str, Any],
    *,
    context: WorkflowWriteContext,
    correlation_id: str | None,
) -> None:
    """annotate() on `conn` already in the tenant's scope, sent without waiting: in a pipeline it travels with the
    statements around it (the caller's commit reports any error)."""
    conn.execute(
        ANNOTATION_STATEMENT, _annotation_params(tenant_id, execution_id, event_type, metadata, context, correlation_id)
    )


def _annotation_params(
    tenant_id: UUID,
    execution_id: UUID,
    event_type: str,
    metadata: dict[str, Any],
    context: WorkflowWriteContext,
    correlation_id: str | None,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "execution_id": execution_id,
        "event_id": uuid4(),
        "event_type": event_type,
        "event_metadata": Jsonb(metadata),
        "actor": context.actor,
        "correlation_id": correlation_id,
    }


def _write(conn: Connection, statement: str, params: dict[str, Any]) -> Execution | None:
    with conn.pipeline(), tenant_transaction(conn, params["tenant_id"]):
        cursor = conn.execute(statement, params)
    row = cursor.fetchone()
    return execution_from_row(row) if row else None
