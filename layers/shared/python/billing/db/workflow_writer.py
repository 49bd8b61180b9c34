"""The authoritative workflow write path: one billing.contract_term_datetimes row per transition."""

from __future__ import annotations

import os
from uuid import UUID

from psycopg import pq

from billing.db.connection import Connection
from billing.domain.errors import WorkflowWriteOutsideTransaction
from billing.domain.workflow import BillingWorkflowConfig, WorkflowPhase, WorkflowWriteContext


def authoritative_write_enabled() -> bool:
    """AUTHORITATIVE_WRITE_ENABLED, default true; only an explicit false-like value turns the write path off."""
    return os.environ.get("AUTHORITATIVE_WRITE_ENABLED", "true").strip().lower() not in {
        "false",
        "0",
        "no",
        "off",
    }


# The row is derived from the lifecycle event written earlier in the same transaction: if that event does not
# exist (the transition lost its race and wrote nothing) this inserts nothing; if it does, the insert either
# writes its row or raises, aborting the transaction — there is no path that keeps the state change without it.
_INSERT_WORKFLOW_ROW = f"""
insert into {BillingWorkflowConfig.TARGET_TABLE} (
    tenant_id, transition_id, workflow_key, contract_id, subject_type, subject_id, event_id,
    phase_code, term_at, source, actor_id, correlation_id
)
select ev.tenant_id,
       billing.workflow_transition_id(%(workflow_key)s, ev.tenant_id, ev.execution_id, ev.id),
       %(workflow_key)s, e.entity_contract_id, %(subject_type)s, ev.execution_id, ev.id,
       %(phase)s, ev.occurred_at, %(source)s, %(actor)s, ev.correlation_id
  from billing.billing_execution_events ev
  join billing.billing_executions e on e.tenant_id = ev.tenant_id and e.id = ev.execution_id
 where ev.tenant_id = %(tenant_id)s and ev.id = %(event_id)s
"""


def record_workflow_event_transactional(
    conn: Connection,
    *,
    tenant_id: UUID,
    event_id: UUID,
    phase: WorkflowPhase,
    context: WorkflowWriteContext,
) -> None:
    """Write the workflow row for a lifecycle event inside the caller's open transaction; fail closed.

    Raises WorkflowWriteOutsideTransaction when no transaction is open, so the row can never be written
    separately from (and possibly without) the state change it records.
    """
    status = conn.info.transaction_status
    if status not in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.ACTIVE):
        raise WorkflowWriteOutsideTransaction(
            "record_workflow_event_transactional needs an open transaction "
            f"(connection is {status.name}); refusing to write the workflow row on its own"
        )
    conn.execute(
        _INSERT_WORKFLOW_ROW,
        {
            "workflow_key": BillingWorkflowConfig.WORKFLOW_KEY,
            "subject_type": BillingWorkflowConfig.SUBJECT_TYPE,
            "tenant_id": tenant_id,
            "event_id": event_id,
            "phase": phase.value,
            "source": context.source.value,
            "actor": context.actor,
        },
    )
