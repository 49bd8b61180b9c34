"""PostgreSQL repository for billing executions: the idempotent create and the ten transition methods.

Every write is ONE data-modifying statement holding the state change, its lifecycle event, its outbox row and
its workflow row, so all four commit together or none does and the event and outbox payload are built from the
row exactly as committed. The statement runs in a tenant-scoped transaction (row-level security); BEGIN, the
scope, the statement and COMMIT travel in one pipeline: one network round trip per transition
(see bench/lifecycle_throughput.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn
from uuid import UUID, uuid4

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import pipelined_tenant_transaction, run_in_tenant_scope
from billing.db.workflow_writer import authoritative_write_enabled, workflow_cte, workflow_params
from billing.domain.errors import ExecutionNotFound, InvalidTransition, TransitionConflict
from billing.domain.execution import Execution, ExecutionEvent, ExecutionRequest, PaymentRail
from billing.domain.status import ExecutionStatus, is_terminal
from billing.domain.transitions import (
    CREATED_EVENT_TYPE,
    RETRY_SCHEDULED_EVENT_TYPE,
    TRANSITIONS,
    TransitionMethod,
)
from billing.domain.workflow import WorkflowPhase, WorkflowWriteContext

# Layer 2 of idempotency: a concurrent create with the same key inserts nothing and reads the winner.
_INSERT = """
    insert into billing.billing_executions (
        tenant_id, id, entity_contract_id, plan_contract_id, amount, currency, payment_rail, payment_provider,
        payment_instrument_id, idempotency_key, request_fingerprint, correlation_id, metadata
    ) values (
        %(tenant_id)s, %(id)s, %(entity_contract_id)s, %(plan_contract_id)s, %(amount)s, %(currency)s,
        %(payment_rail)s, %(payment_provider)s, %(payment_instrument_id)s, %(idempotency_key)s,
        %(request_fingerprint)s, %(correlation_id)s, %(metadata)s
    )
    on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
    returning *
"""

# Layer 3 of idempotency: the status guard. A caller that lost the race updates nothing. Transitions out of
# "pending before submission" (mark_processing, mark_canceled) also guard on submitted_at: a caller that read the
# execution before another one submitted it must not resubmit or cancel a charge lodged at the provider.
#
# Times are the statement's clock, read once (`clock`), not now(): inside a worker's long batch transaction now()
# would date every change to when the batch began.
_TRANSITION = """
    update billing.billing_executions e
       set status = %(to_status)s,
           updated_at = clock.at,
           provider_reference = coalesce(%(provider_reference)s, e.provider_reference),
           submitted_at = case when %(submitted)s then coalesce(e.submitted_at, clock.at) else e.submitted_at end,
           last_error_code = coalesce(%(error_code)s, e.last_error_code),
           attempt_count = e.attempt_count + %(attempt_increment)s,
           next_attempt_at = null,
           finished_at = case when %(terminal)s then clock.at else null end
      from (select clock_timestamp() as at) clock
     where e.tenant_id = %(tenant_id)s and e.id = %(execution_id)s and e.status = %(old_status)s
       and (not %(unsubmitted_only)s or e.submitted_at is null)
    returning e.*
"""

# A retry scheduled while the execution stays in processing: attempt bookkeeping without a status change. The
# attempt number is part of the guard, so a stale or duplicated caller records nothing.
_RETRY_SCHEDULED = """
    update billing.billing_executions e
       set updated_at = clock_timestamp(), last_error_code = %(error_code)s, next_attempt_at = %(next_attempt_at)s
     where e.tenant_id = %(tenant_id)s and e.id = %(execution_id)s and e.status = %(old_status)s
       and e.attempt_count = %(attempt)s
    returning e.*
"""


def companion_ctes(*, old_status: str = "%(old_status)s", at: str = "w.updated_at") -> str:
    """What every write records beside the row itself: the lifecycle event and the outbox row, both built from
    the row `written` as this statement left it. `old_status` and `at` are SQL expressions over `w`."""
    return f""", event as (
    insert into billing.billing_execution_events (
        tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
    )
    select w.tenant_id, %(event_id)s, w.id, %(event_type)s, {old_status}, w.status, %(event_metadata)s,
           %(actor)s, %(correlation_id)s, {at}
      from written w
), outbox as (
    insert into billing.billing_outbox (
        tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at
    )
    select w.tenant_id, %(event_id)s, w.id, %(event_type)s,
           billing.execution_event_payload(row(w.*)::billing.billing_executions, %(event_id)s, %(event_type)s,
                                           {old_status}, %(correlation_id)s, {at}),
           %(correlation_id)s, {at}
      from written w
)"""


def write_statement(write: str, *, workflow: bool, old_status: str = "%(old_status)s", at: str = "w.updated_at") -> str:
    """One statement: the write (one row or none) as CTE `written`, its event and outbox row and, if asked, its
    workflow row. Unreferenced data-modifying CTEs still run, so the companions exist exactly when a row was
    written."""
    companions = companion_ctes(old_status=old_status, at=at)
    if workflow:
        companions += ", " + workflow_cte("written")
    return f"with written as ({write}){companions}\nselect * from written"


# Each state change with and without the authoritative workflow write (AUTHORITATIVE_WRITE_ENABLED).
_INSERT_STATEMENTS = {enabled: write_statement(_INSERT, workflow=enabled) for enabled in (True, False)}
_TRANSITION_STATEMENTS = {enabled: write_statement(_TRANSITION, workflow=enabled) for enabled in (True, False)}
# Not a phase change, so never a workflow row.
_RETRY_SCHEDULED_STATEMENTS = dict.fromkeys((True, False), write_statement(_RETRY_SCHEDULED, workflow=False))

# Keyset pagination in a stable order (newest first, id breaking ties); unset filters match everything.
_LIST = """
select * from billing.billing_executions
 where tenant_id = %(tenant_id)s
   and (%(status)s::text is null or status = %(status)s)
   and (%(payment_rail)s::text is null or payment_rail = %(payment_rail)s)
   and (%(entity_contract_id)s::text is null or entity_contract_id = %(entity_contract_id)s)
   and (%(plan_contract_id)s::text is null or plan_contract_id = %(plan_contract_id)s)
   and (%(created_from)s::timestamptz is null or created_at >= %(created_from)s)
   and (%(created_to)s::timestamptz is null or created_at < %(created_to)s)
   and (%(after_created_at)s::timestamptz is null or (created_at, id) < (%(after_created_at)s, %(after_id)s::uuid))
 order by created_at desc, id desc
 limit %(limit)s
"""

_SELECT_EXECUTION = "select * from billing.billing_executions where tenant_id = %s and id = %s"
_SELECT_BY_KEY = "select * from billing.billing_executions where tenant_id = %s and idempotency_key = %s"
_SELECT_EVENTS = """
select * from billing.billing_execution_events
 where tenant_id = %s and execution_id = %s
 order by sequence
"""
_SELECT_WORKFLOW = """
select w.phase_code, w.term_at, w.source, w.actor_id, w.correlation_id, w.event_id, w.transition_id
  from billing.contract_term_datetimes w
  join billing.billing_execution_events ev on ev.tenant_id = w.tenant_id and ev.id = w.event_id
 where w.tenant_id = %s and w.subject_id = %s
 order by ev.sequence
"""


@dataclass(frozen=True, slots=True)
class ExecutionListQuery:
    """Filters and position of one page of executions; `after` is the last (created_at, id) already seen."""

    status: ExecutionStatus | None = None
    payment_rail: PaymentRail | None = None
    entity_contract_id: str | None = None
    plan_contract_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    after: tuple[datetime, UUID] | None = None
    limit: int = 20


def execution_from_row(row: Mapping[str, Any]) -> Execution:
    """Map a billing_executions row to the domain type."""
    return Execution(
        tenant_id=row["tenant_id"],
        id=row["id"],
        entity_contract_id=row["entity_contract_id"],
        plan_contract_id=row["plan_contract_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=ExecutionStatus(row["status"]),
        payment_rail=PaymentRail(row["payment_rail"]),
        payment_provider=row["payment_provider"],
        payment_instrument_id=row["payment_instrument_id"],
        provider_reference=row["provider_reference"],
        idempotency_key=row["idempotency_key"],
        request_fingerprint=row["request_fingerprint"],
        correlation_id=row["correlation_id"],
        metadata=dict(row["metadata"] or {}),
        attempt_count=row["attempt_count"],
        last_error_code=row["last_error_code"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        submitted_at=row["submitted_at"],
        finished_at=row["finished_at"],
    )


def _event_from_row(row: Mapping[str, Any]) -> ExecutionEvent:
    return ExecutionEvent(
        tenant_id=row["tenant_id"],
        id=row["id"],
        execution_id=row["execution_id"],
        type=row["type"],
        old_status=ExecutionStatus(row["old_status"]) if row["old_status"] else None,
        new_status=ExecutionStatus(row["new_status"]),
        metadata=dict(row["metadata"]),
        user_id=row["user_id"],
        correlation_id=row["correlation_id"],
        occurred_at=row["occurred_at"],
    )


@dataclass(frozen=True, slots=True)
class QueuedTransition:
    """A state change sent inside a caller's pipelined transaction (ExecutionRepository.queue_mark_processing)."""

    repository: ExecutionRepository
    cursor: Cursor[DictRow]
    tenant_id: UUID
    execution_id: UUID
    expected: ExecutionStatus

    def result(self) -> Execution:
        """After the transaction committed: the changed execution, or TransitionConflict if its guard refused."""
        row = self.cursor.fetchone()
        if row is None:
            self.repository.raise_conflict(self.tenant_id, self.execution_id, self.expected)
        return execution_from_row(row)


class ExecutionRepository:
    """Reads and writes billing executions on one connection (one per Lambda container or worker thread)."""

    def __init__(self, conn: Connection, *, authoritative_write: bool | None = None) -> None:
        self._conn = conn
        self._authoritative_write = (
            authoritative_write_enabled() if authoritative_write is None else authoritative_write
        )

    # -- reads -------------------------------------------------------------------------------------------

    def get(self, tenant_id: UUID, execution_id: UUID) -> Execution | None:
        rows = self._read(tenant_id, _SELECT_EXECUTION, [tenant_id, execution_id])
        return execution_from_row(rows[0]) if rows else None

    def find_by_idempotency_key(self, tenant_id: UUID, idempotency_key: str) -> Execution | None:
        rows = self._read(tenant_id, _SELECT_BY_KEY, [tenant_id, idempotency_key])
        return execution_from_row(rows[0]) if rows else None

    def list_page(self, tenant_id: UUID, query: ExecutionListQuery) -> tuple[list[Execution], bool]:
        """One page in (created_at desc, id desc) order and whether more rows follow it."""
        params = {
            "tenant_id": tenant_id,
            "status": query.status.value if query.status else None,
            "payment_rail": query.payment_rail.value if query.payment_rail else None,
            "entity_contract_id": query.entity_contract_id,
            "plan_contract_id": query.plan_contract_id,
            "created_from": query.created_from,
            "created_to": query.created_to,
            "after_created_at": query.after[0] if query.after else None,
            "after_id": query.after[1] if query.after else None,
            "limit": query.limit + 1,  # one extra row tells whether another page exists
        }
        rows = self._read(tenant_id, _LIST, params)
        return [execution_from_row(row) for row in rows[: query.limit]], len(rows) > query.limit

    def events(self, tenant_id: UUID, execution_id: UUID) -> list[ExecutionEvent]:
        """The execution's lifecycle timeline, oldest first."""
        return [_event_from_row(row) for row in self._read(tenant_id, _SELECT_EVENTS, [tenant_id, execution_id])]

    def workflow_phases(self, tenant_id: UUID, execution_id: UUID) -> list[dict[str, Any]]:
        """The execution's authoritative workflow rows, oldest first."""
        return self._read(tenant_id, _SELECT_WORKFLOW, [tenant_id, execution_id])

    # -- create ------------------------------------------------------------------------------------------

    def insert_idempotent(
        self,
        tenant_id: UUID,
        request: ExecutionRequest,
        *,
        idempotency_key: str | None,
        payment_provider: str,
        correlation_id: str | None,
        context: WorkflowWriteContext,
        accept: bool = False,
    ) -> tuple[Execution, bool]:
        """Insert a created execution with its event, outbox and workflow rows; (row, True) if this call won.

        When another request already holds the idempotency key, nothing is written and (winner, False) is
        returned; the caller decides whether that is a replay or a reused key. With `accept`, the execution won
        is also moved on to pending (mark_pending, its own event, outbox and workflow rows) in the same
        transaction: what a caller that executes at once does next anyway, one commit sooner.
        """
        event_id = uuid4()
        params = {
            "tenant_id": tenant_id,
            "id": uuid4(),
            "entity_contract_id": request.entity_contract_id,
            "plan_contract_id": request.plan_contract_id,
            "amount": request.amount,
            "currency": request.currency,
            "payment_rail": request.payment_rail.value,
            "payment_provider": payment_provider,
            "payment_instrument_id": request.payment_instrument_id,
            "idempotency_key": idempotency_key,
            "request_fingerprint": request.fingerprint(),
            "correlation_id": correlation_id,
            "metadata": Jsonb(request.metadata),
            "event_id": event_id,
            "event_type": CREATED_EVENT_TYPE,
            "old_status": None,
            "event_metadata": Jsonb({"amount": request.amount, "currency": request.currency}),
            "actor": context.actor,
        }
        row = (
            self._insert_accepted(params, context, correlation_id)
            if accept
            else self._write(_INSERT_STATEMENTS, params, event_id, WorkflowPhase.CREATED, context)
        )
        if row is not None:
            return row, True
        assert idempotency_key is not None, "an insert without a key cannot conflict"
        winner = self.find_by_idempotency_key(tenant_id, idempotency_key)
        assert winner is not None, "the conflicting row is committed before ON CONFLICT gives way"
        return winner, False

    def _insert_accepted(
        self, params: dict[str, Any], context: WorkflowWriteContext, correlation_id: str | None
    ) -> Execution | None:
        """The insert and created -> pending in one pipelined transaction; the pending row, or None when the
        idempotency key was taken (the insert wrote nothing, so the transition found no row to move)."""
        tenant_id, execution_id = params["tenant_id"], params["id"]
        params.update(workflow_params(params["event_id"], WorkflowPhase.CREATED, context))
        with translated_guard_errors(), pipelined_tenant_transaction(self._conn, tenant_id):
            self._conn.execute(_INSERT_STATEMENTS[self._authoritative_write], params)
            accepted = self._queue_transition(
                TransitionMethod.MARK_PENDING, tenant_id, execution_id, context, correlation_id=correlation_id
            )
        row = accepted.cursor.fetchone()
        return execution_from_row(row) if row is not None else None

    # -- the ten transitions ----------------------------------------------------------------------------

    def mark_pending(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, **details: Any
    ) -> Execution:
        """created -> pending: accepted for execution, not yet submitted to a provider."""
        return self._transition(TransitionMethod.MARK_PENDING, tenant_id, execution_id, context, **details)

    def mark_processing(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, **details: Any
    ) -> Execution:
        """pending -> processing: the caller that wins this becomes the only one allowed to submit."""
        return self._transition(
            TransitionMethod.MARK_PROCESSING,
            tenant_id,
            execution_id,
            context,
            attempt=True,
            unsubmitted_only=True,
            **details,
        )

    def mark_completed(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, **details: Any
    ) -> Execution:
        """processing -> completed: the provider confirmed the charge synchronously."""
        return self._transition(
            TransitionMethod.MARK_COMPLETED, tenant_id, execution_id, context, submitted=True, **details
        )

    def mark_failed(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, **details: Any
    ) -> Execution:
        """processing -> failed: declined, or retries exhausted (error_code says which)."""
        return self._transition(TransitionMethod.MARK_FAILED, tenant_id, execution_id, context, **details)

    def mark_canceled(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        from_status: ExecutionStatus,
        **details: Any,
    ) -> Execution:
        """created|pending -> canceled; the caller states which status it saw (the guard checks it)."""
        return self._transition(
            TransitionMethod.MARK_CANCELED,
            tenant_id,
            execution_id,
            context,
            from_status=from_status,
            unsubmitted_only=True,
            **details,
        )

    def confirm_from_pending(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, **details: Any
    ) -> Execution:
        """pending -> completed: an asynchronous settlement confirmed (webhook)."""
        return self._transition(TransitionMethod.CONFIRM_FROM_PENDING, tenant_id, execution_id, context, **details)

    def reject_from_pending(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, **details: Any
    ) -> Execution:
        """pending -> failed: an asynchronous settlement rejected (webhook)."""
        return self._transition(TransitionMethod.REJECT_FROM_PENDING, tenant_id, execution_id, context, **details)

    def settle_from_processing(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        provider_reference: str,
        **details: Any,
    ) -> Execution:
        """processing -> pending: the provider accepted an async payment; it now awaits settlement."""
        return self._transition(
            TransitionMethod.SETTLE_FROM_PROCESSING,
            tenant_id,
            execution_id,
            context,
            provider_reference=provider_reference,
            submitted=True,
            **details,
        )

    def reconcile(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        outcome: ExecutionStatus,
        **details: Any,
    ) -> Execution:
        """pending -> completed|failed: the reconciliation worker learned the outcome from the provider."""
        return self._transition(
            TransitionMethod.RECONCILE, tenant_id, execution_id, context, to_status=outcome, **details
        )

    def refuse(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, *, error_code: str, **details: Any
    ) -> Execution:
        """pending (never submitted) -> failed: the engine itself refused the charge (risk, review, 3-D Secure)."""
        return self._transition(
            TransitionMethod.REFUSE,
            tenant_id,
            execution_id,
            context,
            error_code=error_code,
            unsubmitted_only=True,
            **details,
        )

    # -- attempt bookkeeping -----------------------------------------------------------------------------

    def record_retry_scheduled(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        attempt: int,
        error_code: str,
        next_attempt_at: datetime,
        correlation_id: str | None = None,
    ) -> Execution:
        """Record that attempt `attempt` failed retryably and when the next one is due (status stays processing).

        Raises TransitionConflict if the execution left processing or another attempt started meanwhile.
        """
        event_id = uuid4()
        params = {
            "tenant_id": tenant_id,
            "execution_id": execution_id,
            "old_status": ExecutionStatus.PROCESSING.value,
            "attempt": attempt,
            "error_code": error_code,
            "next_attempt_at": next_attempt_at,
            "event_id": event_id,
            "event_type": RETRY_SCHEDULED_EVENT_TYPE,
            "event_metadata": Jsonb(
                {"attempt": attempt, "error_code": error_code, "next_attempt_at": next_attempt_at.isoformat()}
            ),
            "actor": context.actor,
            "correlation_id": correlation_id,
        }
        row = self._write(_RETRY_SCHEDULED_STATEMENTS, params, event_id, WorkflowPhase.PROCESSING, context)
        return row if row is not None else self.raise_conflict(tenant_id, execution_id, ExecutionStatus.PROCESSING)

    # -- internals ---------------------------------------------------------------------------------------

    def _transition(
        self,
        method: TransitionMethod,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        from_status: ExecutionStatus | None = None,
        to_status: ExecutionStatus | None = None,
        provider_reference: str | None = None,
        error_code: str | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        submitted: bool = False,
        attempt: bool = False,
        unsubmitted_only: bool = False,
    ) -> Execution:
        spec = TRANSITIONS[method]
        source = from_status or spec.from_statuses[0]
        target = to_status or spec.to_statuses[0]
        if source not in spec.from_statuses or target not in spec.to_statuses:
            raise InvalidTransition(f"{method} cannot move an execution from {source} to {target}")
        params = self._transition_params(
            method, tenant_id, execution_id, source, target, context=context, provider_reference=provider_reference,
            error_code=error_code, correlation_id=correlation_id, metadata=metadata, submitted=submitted,
            attempt=attempt, unsubmitted_only=unsubmitted_only,
        )  # fmt: skip
        row = self._write(_TRANSITION_STATEMENTS, params, params["event_id"], spec.phase, context)
        return row if row is not None else self.raise_conflict(tenant_id, execution_id, source)

    @staticmethod
    def _transition_params(
        method: TransitionMethod,
        tenant_id: UUID,
        execution_id: UUID,
        source: ExecutionStatus,
        target: ExecutionStatus,
        *,
        context: WorkflowWriteContext,
        provider_reference: str | None = None,
        error_code: str | None = None,
        correlation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        submitted: bool = False,
        attempt: bool = False,
        unsubmitted_only: bool = False,
    ) -> dict[str, Any]:
        event_id = uuid4()
        event_metadata = dict(metadata or {})
        if error_code is not None:
            event_metadata["error_code"] = error_code
        if provider_reference is not None:
            event_metadata["provider_reference"] = provider_reference
        params: dict[str, Any] = {
            "tenant_id": tenant_id,
            "execution_id": execution_id,
            "old_status": source.value,
            "to_status": target.value,
            "terminal": is_terminal(target),
            "provider_reference": provider_reference,
            "submitted": submitted or provider_reference is not None,
            "error_code": error_code,
            "attempt_increment": 1 if attempt else 0,
            "unsubmitted_only": unsubmitted_only,
            "event_id": event_id,
            "event_type": TRANSITIONS[method].event_type,
            "event_metadata": Jsonb(event_metadata),
            "actor": context.actor,
            "correlation_id": correlation_id,
        }
        return params

    def queue_mark_processing(
        self, tenant_id: UUID, execution_id: UUID, context: WorkflowWriteContext, *, correlation_id: str | None
    ) -> QueuedTransition:
        """mark_processing sent in the caller's open, tenant-scoped (pipelined) transaction without waiting: it
        commits with what the caller wrote before it, or not at all. QueuedTransition.result(), after the commit,
        is the claimed execution or the TransitionConflict mark_processing would raise."""
        return self._queue_transition(
            TransitionMethod.MARK_PROCESSING, tenant_id, execution_id, context,
            correlation_id=correlation_id, attempt=True, unsubmitted_only=True,
        )  # fmt: skip

    def _queue_transition(
        self,
        method: TransitionMethod,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        correlation_id: str | None,
        attempt: bool = False,
        unsubmitted_only: bool = False,
    ) -> QueuedTransition:
        """A transition from its first source status, with its workflow row, sent in the caller's open transaction."""
        spec = TRANSITIONS[method]
        source = spec.from_statuses[0]
        params = self._transition_params(
            method, tenant_id, execution_id, source, spec.to_statuses[0], context=context,
            correlation_id=correlation_id, attempt=attempt, unsubmitted_only=unsubmitted_only,
        )  # fmt: skip
        params.update(workflow_params(params["event_id"], spec.phase, context))
        cursor = self._conn.execute(_TRANSITION_STATEMENTS[self._authoritative_write], params)
        return QueuedTransition(self, cursor, tenant_id, execution_id, source)

    def raise_conflict(self, tenant_id: UUID, execution_id: UUID, expected: ExecutionStatus) -> NoReturn:
        """The error of a transition whose guard refused: not found, or in another status than `expected`."""
        current = self.get(tenant_id, execution_id)
        if current is None:
            raise ExecutionNotFound(f"execution {execution_id} not found", execution_id=str(execution_id))
        raise TransitionConflict(str(execution_id), (expected.value,), current.status.value)

    def _write(
        self,
        statements: Mapping[bool, str],
        params: dict[str, Any],
        event_id: UUID,
        phase: WorkflowPhase,
        context: WorkflowWriteContext,
    ) -> Execution | None:
        """Run one state-change statement (with its workflow row when enabled); the written row or None."""
        params.update(workflow_params(event_id, phase, context))
        with translated_guard_errors():
            rows = run_in_tenant_scope(self._conn, params["tenant_id"], statements[self._authoritative_write], params)
        return execution_from_row(rows[0]) if rows else None

    def _read(self, tenant_id: UUID, sql: str, params: list[Any] | dict[str, Any]) -> list[dict[str, Any]]:
        return run_in_tenant_scope(self._conn, tenant_id, sql, params)
