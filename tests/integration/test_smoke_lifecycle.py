from __future__ import annotations

from uuid import UUID

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from tests.factories import count_rows, create_execution


def test_full_card_lifecycle_writes_event_outbox_and_workflow_per_step(
    conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    repo = ExecutionRepository(conn)
    ctx = WorkflowWriteContext.service_default()
    execution = create_execution(conn, tenant_id)
    repo.mark_pending(tenant_id, execution.id, ctx)
    repo.mark_processing(tenant_id, execution.id, ctx)
    done = repo.mark_completed(tenant_id, execution.id, ctx, provider_reference="ch_1")

    assert done.status is ExecutionStatus.COMPLETED
    assert done.finished_at is not None
    assert [e.new_status for e in repo.events(tenant_id, execution.id)] == [
        ExecutionStatus.CREATED,
        ExecutionStatus.PENDING,
        ExecutionStatus.PROCESSING,
        ExecutionStatus.COMPLETED,
    ]
    assert count_rows(admin, "billing_outbox", tenant_id) == 4
    assert count_rows(admin, "contract_term_datetimes", tenant_id) == 4
