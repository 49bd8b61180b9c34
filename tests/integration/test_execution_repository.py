"""The repository's transitions: one transaction each, typed conflicts, payloads from the committed row."""

from __future__ import annotations

from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.tenancy import tenant_transaction
from billing.db.workflow_writer import record_workflow_event_transactional
from billing.domain.errors import (
    ExecutionNotFound,
    InvalidTransition,
    TransitionConflict,
    WorkflowWriteFailed,
    WorkflowWriteOutsideTransaction,
)
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowPhase, WorkflowWriteContext
from tests.factories import count_rows, create_execution

CTX = WorkflowWriteContext.service_default()
WRITTEN_TABLES = ["billing_execution_events", "billing_outbox", "contract_term_datetimes"]


def _counts(admin: Connection, tenant_id: UUID) -> dict[str, int]:
    return {table: count_rows(admin, table, tenant_id) for table in WRITTEN_TABLES}


def _processing(conn: Connection, tenant_id: UUID) -> UUID:
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant_id, payment_rail="sepa_debit")
    repo.mark_pending(tenant_id, execution.id, CTX)
    repo.mark_processing(tenant_id, execution.id, CTX)
    return execution.id


def test_transition_from_wrong_status_raises_conflict_and_writes_nothing(
    conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant_id)
    before = _counts(admin, tenant_id)
    with pytest.raises(TransitionConflict) as caught:
        repo.mark_processing(tenant_id, execution.id, CTX)
    assert (caught.value.expected, caught.value.actual) == (("pending",), "created")
    assert _counts(admin, tenant_id) == before
    assert repo.get(tenant_id, execution.id) == execution


def test_transition_of_other_tenants_execution_raises_not_found(conn: Connection, tenant_id: UUID) -> None:
    execution = create_execution(conn, tenant_id)
    with pytest.raises(ExecutionNotFound):
        ExecutionRepository(conn).mark_pending(uuid4(), execution.id, CTX)


def test_settle_from_processing_records_reference_and_submission(conn: Connection, tenant_id: UUID) -> None:
    execution_id = _processing(conn, tenant_id)
    settled = ExecutionRepository(conn).settle_from_processing(
        tenant_id, execution_id, CTX, provider_reference="sbx_123"
    )
    assert settled.status is ExecutionStatus.PENDING
    assert settled.awaiting_settlement
    assert settled.provider_reference == "sbx_123"
    assert settled.finished_at is None


def test_reconcile_to_failed_records_error_code_and_phase(conn: Connection, tenant_id: UUID) -> None:
    repo = ExecutionRepository(conn)
    execution_id = _processing(conn, tenant_id)
    repo.settle_from_processing(tenant_id, execution_id, CTX, provider_reference="sbx_9")
    failed = repo.reconcile(
        tenant_id, execution_id, WorkflowWriteContext.system(), outcome=ExecutionStatus.FAILED, error_code="AC04"
    )
    assert (failed.status, failed.last_error_code) == (ExecutionStatus.FAILED, "AC04")
    last_phase = repo.workflow_phases(tenant_id, execution_id)[-1]
    assert (last_phase["phase_code"], last_phase["source"]) == ("reconciled", "system")


def test_reconcile_with_non_terminal_outcome_is_refused_before_writing(conn: Connection, tenant_id: UUID) -> None:
    execution_id = _processing(conn, tenant_id)
    with pytest.raises(InvalidTransition):
        ExecutionRepository(conn).reconcile(tenant_id, execution_id, CTX, outcome=ExecutionStatus.PROCESSING)


def test_cancel_guards_on_the_status_the_caller_saw(conn: Connection, tenant_id: UUID) -> None:
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant_id)
    repo.mark_pending(tenant_id, execution.id, CTX)
    with pytest.raises(TransitionConflict):
        repo.mark_canceled(tenant_id, execution.id, CTX, from_status=ExecutionStatus.CREATED)
    canceled = repo.mark_canceled(tenant_id, execution.id, CTX, from_status=ExecutionStatus.PENDING)
    assert canceled.status is ExecutionStatus.CANCELED


def test_outbox_payload_is_built_from_committed_row(conn: Connection, admin: Connection, tenant_id: UUID) -> None:
    repo = ExecutionRepository(conn)
    execution_id = _processing(conn, tenant_id)
    repo.settle_from_processing(tenant_id, execution_id, CTX, provider_reference="sbx_77", correlation_id="corr-9")
    row = admin.execute(
        "select event_id, event_type, payload from billing.billing_outbox where tenant_id = %s order by id desc"
        " limit 1",
        [tenant_id],
    ).fetchone()
    assert row is not None
    payload = row["payload"]
    assert payload["event_id"] == str(row["event_id"])
    assert payload["event_type"] == row["event_type"] == "billing.execution.settlement_pending"
    assert (payload["old_status"], payload["new_status"]) == ("processing", "pending")
    assert payload["provider_reference"] == "sbx_77"
    assert payload["correlation_id"] == "corr-9"
    assert (payload["amount"], payload["currency"]) == (1999, "EUR")
    assert (payload["payment_rail"], payload["payment_provider"]) == ("sepa_debit", "sandbox")
    assert payload["tenant_id"] == str(tenant_id)
    assert payload["idempotency_key"].startswith("key-")
    assert payload["attempt_count"] == 1


@pytest.mark.parametrize("failing_table", WRITTEN_TABLES)
def test_fault_after_state_update_before_commit_leaves_nothing(
    conn: Connection, admin: Connection, tenant_id: UUID, failing_table: str
) -> None:
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant_id)
    before = _counts(admin, tenant_id)
    # The fault: one of the companion writes refuses this tenant's row after the state update already ran. Only
    # the admin may put a trigger on the table (the app role has no DDL); the repository still runs as billing_app.
    fault = f"billing.injected_fault_{tenant_id.hex}"
    admin.execute(
        f"""
        create function {fault}() returns trigger language plpgsql as $$
        begin
            if new.tenant_id = '{tenant_id}' then raise exception 'injected fault'; end if;
            return new;
        end $$;
        create trigger injected_fault_{tenant_id.hex} before insert on billing.{failing_table}
            for each row execute function {fault}();
        """
    )
    try:
        with pytest.raises(psycopg.Error, match="injected fault"):
            repo.mark_pending(tenant_id, execution.id, CTX)
    finally:
        admin.execute(
            f"drop trigger injected_fault_{tenant_id.hex} on billing.{failing_table}; drop function {fault}()"
        )
    assert repo.get(tenant_id, execution.id) == execution
    assert _counts(admin, tenant_id) == before


def _raw_mark_pending(conn: Connection, tenant_id: UUID, execution_id: UUID, event_id: UUID) -> None:
    """A caller composing its own (tenant-scoped) transaction: state change, event and the event's outbox row as
    separate statements (the database refuses to commit a change without its event, or an event unannounced)."""
    conn.execute(
        "update billing.billing_executions set status = 'pending' where tenant_id = %s and id = %s",
        [tenant_id, execution_id],
    )
    conn.execute(
        "insert into billing.billing_execution_events (tenant_id, id, execution_id, type, old_status, new_status,"
        " correlation_id) values (%s, %s, %s, 'billing.execution.pending', 'created', 'pending', 'corr-raw')",
        [tenant_id, event_id, execution_id],
    )
    conn.execute(
        "insert into billing.billing_outbox (tenant_id, event_id, aggregate_id, event_type, payload, correlation_id)"
        " select e.tenant_id, %(event)s, e.id, 'billing.execution.pending',"
        " billing.execution_event_payload(e, %(event)s, 'billing.execution.pending', 'created', 'corr-raw', now()),"
        " 'corr-raw' from billing.billing_executions e where e.tenant_id = %(tenant)s and e.id = %(execution)s",
        {"event": event_id, "tenant": tenant_id, "execution": execution_id},
    )


def test_record_workflow_event_in_caller_transaction_writes_row_from_event(conn: Connection, tenant_id: UUID) -> None:
    execution = create_execution(conn, tenant_id)
    event_id = uuid4()
    with tenant_transaction(conn, tenant_id):
        _raw_mark_pending(conn, tenant_id, execution.id, event_id)
        record_workflow_event_transactional(
            conn, tenant_id=tenant_id, event_id=event_id, phase=WorkflowPhase.PENDING, context=CTX
        )
    last = ExecutionRepository(conn).workflow_phases(tenant_id, execution.id)[-1]
    assert (last["phase_code"], last["event_id"], last["correlation_id"]) == ("pending", event_id, "corr-raw")


def test_fault_after_workflow_write_before_commit_rolls_back_caller_transaction(
    conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant_id)
    before = _counts(admin, tenant_id)
    event_id = uuid4()
    with pytest.raises(RuntimeError, match="died"), tenant_transaction(conn, tenant_id):
        _raw_mark_pending(conn, tenant_id, execution.id, event_id)
        record_workflow_event_transactional(
            conn, tenant_id=tenant_id, event_id=event_id, phase=WorkflowPhase.PENDING, context=CTX
        )
        raise RuntimeError("process died before commit")
    assert repo.get(tenant_id, execution.id) == execution
    assert _counts(admin, tenant_id) == before


def test_record_workflow_event_for_missing_event_fails_closed(conn: Connection, tenant_id: UUID) -> None:
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant_id)
    with pytest.raises(WorkflowWriteFailed), tenant_transaction(conn, tenant_id):
        _raw_mark_pending(conn, tenant_id, execution.id, uuid4())
        record_workflow_event_transactional(
            conn, tenant_id=tenant_id, event_id=uuid4(), phase=WorkflowPhase.PENDING, context=CTX
        )
    assert repo.get(tenant_id, execution.id) == execution


def test_workflow_write_outside_transaction_is_refused(conn: Connection, tenant_id: UUID) -> None:
    with pytest.raises(WorkflowWriteOutsideTransaction):
        record_workflow_event_transactional(
            conn, tenant_id=tenant_id, event_id=uuid4(), phase=WorkflowPhase.PENDING, context=CTX
        )


def test_workflow_row_carries_context_source_and_actor(conn: Connection, tenant_id: UUID) -> None:
    repo = ExecutionRepository(conn)
    execution_id = _processing(conn, tenant_id)
    repo.settle_from_processing(tenant_id, execution_id, CTX, provider_reference="sbx_5")
    repo.confirm_from_pending(tenant_id, execution_id, WorkflowWriteContext.webhook("sandbox"))
    last = repo.workflow_phases(tenant_id, execution_id)[-1]
    assert (last["phase_code"], last["source"], last["actor_id"]) == ("completed", "webhook", "provider:sandbox")


def test_authoritative_write_disabled_skips_workflow_row(
    conn: Connection, admin: Connection, tenant_id: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHORITATIVE_WRITE_ENABLED", "false")
    execution = create_execution(conn, tenant_id)
    ExecutionRepository(conn).mark_pending(tenant_id, execution.id, CTX)
    assert count_rows(admin, "contract_term_datetimes", tenant_id) == 0
    assert count_rows(admin, "billing_execution_events", tenant_id) == 2


def test_transition_inside_a_long_transaction_is_dated_when_it_happens(conn: Connection, tenant_id: UUID) -> None:
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant_id)
    with conn.transaction():  # a worker's batch: now() stays at the transaction's start
        started = conn.execute("select now() as t").fetchone()
        pending = repo.mark_pending(tenant_id, execution.id, CTX)
    assert started is not None
    assert pending.updated_at > started["t"]
    assert repo.events(tenant_id, execution.id)[-1].occurred_at == pending.updated_at
