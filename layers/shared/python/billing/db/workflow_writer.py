"""The authoritative workflow write path: one billing.contract_term_datetimes row per transition.

The row is always written by the same statement, or at least the same transaction, as the state change it
records, so the workflow view can never disagree with the executions. Two ways in, one SQL definition:

* `workflow_cte(source)` — the repository's transitions embed it in their single data-modifying statement, so
  state, event, outbox and workflow row commit together in one round trip, atomically even if the caller dies.
* `record_workflow_event_transactional(conn, ...)` — for callers that compose a transaction of several
  statements; it refuses to run outside an open transaction (fail closed).
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID

from psycopg import pq

from billing.db.connection import Connection
from billing.domain.errors import WorkflowWriteFailed, WorkflowWriteOutsideTransaction
from billing.domain.workflow import BillingWorkflowConfig, WorkflowPhase, WorkflowWriteContext

_FALSE_WORDS = {"false", "0", "no", "off"}


def authoritative_write_enabled() -> bool:
    """AUTHORITATIVE_WRITE_ENABLED, default true; only an explicit false-like value turns the write path off."""
    return os.environ.get("AUTHORITATIVE_WRITE_ENABLED", "true").strip().lower() not in _FALSE_WORDS


def workflow_cte(source: str, *, correlation_id: str = "%(correlation_id)s") -> str:
    """A `workflow` CTE inserting the row for the execution that CTE `source` just wrote (zero rows: nothing).

    `correlation_id` is an SQL expression: the statement's parameter by default, or a column of `source`.
    """
    return f"""workflow as (
    insert into {BillingWorkflowConfig.TARGET_TABLE} (
        tenant_id, transition_id, workflow_key, contract_id, subject_type, subject_id, event_id,
        phase_code, term_at, source, actor_id, correlation_id
    )
    select s.tenant_id, billing.workflow_transition_id(%(wf_key)s, s.tenant_id, s.id, %(event_id)s),
           %(wf_key)s, s.entity_contract_id, %(wf_subject_type)s, s.id, %(event_id)s,
           %(wf_phase)s, s.updated_at, %(wf_source)s, %(wf_actor)s, {correlation_id}
      from {source} s
    returning transition_id
)"""


def workflow_params(event_id: UUID, phase: WorkflowPhase, context: WorkflowWriteContext) -> dict[str, Any]:
    """Parameters of `workflow_cte`: which event, which phase, who and from where."""
    return {
        "wf_key": BillingWorkflowConfig.WORKFLOW_KEY,
        "wf_subject_type": BillingWorkflowConfig.SUBJECT_TYPE,
        "event_id": event_id,
        "wf_phase": phase.value,
        "wf_source": context.source.value,
        "wf_actor": context.actor,
    }


# The execution as of the given lifecycle event, which the caller wrote earlier in its transaction. If that
# event does not exist, nothing is inserted; if it does, the row is written or the statement raises.
_RECORD_FOR_EVENT = f"""
with written as (
    select e.tenant_id, e.id, e.entity_contract_id, ev.occurred_at as updated_at, ev.correlation_id
      from billing.billing_execution_events ev
      join billing.billing_executions e on e.tenant_id = ev.tenant_id and e.id = ev.execution_id
     where ev.tenant_id = %(tenant_id)s and ev.id = %(event_id)s
), {workflow_cte("written", correlation_id="s.correlation_id")}
select count(*) as written from workflow
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

    Raises WorkflowWriteOutsideTransaction when no transaction is open, so the row can never be committed
    apart from the state change it records, and WorkflowWriteFailed when nothing could be written; either
    error, like any failure of the insert, aborts the caller's transaction.
    """
    status = conn.info.transaction_status
    if status not in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.ACTIVE):
        raise WorkflowWriteOutsideTransaction(
            "record_workflow_event_transactional needs an open transaction "
            f"(connection is {status.name}); refusing to write the workflow row on its own"
        )
    params = {**workflow_params(event_id, phase, context), "tenant_id": tenant_id}
    row = conn.execute(_RECORD_FOR_EVENT, params).fetchone()
    if row is None or row["written"] != 1:
        # No such event in this transaction: committing now would keep a state change without its workflow row.
        raise WorkflowWriteFailed(f"no lifecycle event {event_id} to record a workflow row for", event_id=str(event_id))
