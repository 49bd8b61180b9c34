"""The attempt guards in the statements themselves, not only in their callers.

ExecutionRepository.record_retry_scheduled and AttemptLedger.claim_attempt promise in their docstrings that a stale
attempt number, or an execution that left processing, changes nothing. Their callers (the driver, the retry
worker) check first, so only these tests would notice the guard leaving the statement: each asserts that the call
is refused and that nothing was written, execution row, event or outbox row. Both run as the roles production
gives them: record_retry_scheduled as billing_app (the execute function's driver) and billing_worker (the retry
consumer); claim_attempt as billing_worker. Rows are counted as the admin.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from billing.db.attempts import AttemptLedger
from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.domain.errors import TransitionConflict
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from tests.factories import count_rows, create_execution

CTX = WorkflowWriteContext.service_default()
SYSTEM = WorkflowWriteContext.system()
WRITTEN_TABLES = ("billing_execution_events", "billing_outbox", "contract_term_datetimes")
LATER = datetime(2030, 1, 1, tzinfo=UTC)


def processing(conn: Connection, tenant_id: UUID) -> Execution:
    """An execution in processing after its first attempt (attempt_count 1), driven as the execute function does."""
    repository = ExecutionRepository(conn)
    created = create_execution(conn, tenant_id, payment_instrument_id="tok_transient_3")
    repository.mark_pending(tenant_id, created.id, CTX)
    execution = repository.mark_processing(tenant_id, created.id, CTX)
    assert (execution.status, execution.attempt_count) == (ExecutionStatus.PROCESSING, 1)
    return execution


def written(admin: Connection, execution: Execution) -> dict[str, Any]:
    """Everything a refused call must leave as it was: the raw row and the rows beside it."""
    row = admin.execute(
        "select * from billing.billing_executions where tenant_id = %s and id = %s",
        [execution.tenant_id, execution.id],
    ).fetchone()
    return {"row": row, **{table: count_rows(admin, table, execution.tenant_id) for table in WRITTEN_TABLES}}


def retry_scheduled(conn: Connection, execution: Execution, *, attempt: int) -> Execution:
    return ExecutionRepository(conn).record_retry_scheduled(
        execution.tenant_id,
        execution.id,
        SYSTEM,
        attempt=attempt,
        error_code="processing_error",
        next_attempt_at=LATER,
        correlation_id="corr-guard",
    )


@pytest.fixture(params=["billing_app", "billing_worker"])
def scheduler(request: pytest.FixtureRequest, conn: Connection, worker: Connection) -> Connection:
    """The connection of each role that records scheduled retries in production."""
    return conn if request.param == "billing_app" else worker


# -- record_retry_scheduled ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 2, 5])
def test_record_retry_scheduled_with_a_stale_attempt_raises_conflict_and_writes_nothing(
    conn: Connection, scheduler: Connection, admin: Connection, tenant_id: UUID, attempt: int
) -> None:
    execution = processing(conn, tenant_id)
    before = written(admin, execution)

    with pytest.raises(TransitionConflict):
        retry_scheduled(scheduler, execution, attempt=attempt)

    assert written(admin, execution) == before


def test_record_retry_scheduled_for_the_current_attempt_writes_its_event_and_outbox_row(
    conn: Connection, scheduler: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # The control for the refusals above: the same call with the right attempt is recorded.
    execution = processing(conn, tenant_id)
    before = written(admin, execution)

    recorded = retry_scheduled(scheduler, execution, attempt=1)

    assert (recorded.next_attempt_at, recorded.last_error_code) == (LATER, "processing_error")
    after = written(admin, execution)
    assert (after["billing_execution_events"], after["billing_outbox"]) == (
        before["billing_execution_events"] + 1,
        before["billing_outbox"] + 1,
    )
    assert after["contract_term_datetimes"] == before["contract_term_datetimes"]  # not a phase change


def test_record_retry_scheduled_after_the_execution_left_processing_raises_conflict_and_writes_nothing(
    conn: Connection, scheduler: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution = processing(conn, tenant_id)
    ExecutionRepository(conn).mark_completed(tenant_id, execution.id, CTX, provider_reference="sbx_guard")
    before = written(admin, execution)

    # The attempt number is still the current one: only the status guard stands in the way.
    with pytest.raises(TransitionConflict) as caught:
        retry_scheduled(scheduler, execution, attempt=1)

    assert caught.value.actual == ExecutionStatus.COMPLETED.value
    assert written(admin, execution) == before


def test_record_retry_scheduled_after_settle_from_processing_raises_conflict_and_writes_nothing(
    conn: Connection, scheduler: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # Pending at the provider is not terminal, so no immutability trigger refuses the update: the guard must.
    execution = processing(conn, tenant_id)
    ExecutionRepository(conn).settle_from_processing(tenant_id, execution.id, CTX, provider_reference="sbx_guard2")
    before = written(admin, execution)

    with pytest.raises(TransitionConflict) as caught:
        retry_scheduled(scheduler, execution, attempt=1)

    assert caught.value.actual == ExecutionStatus.PENDING.value
    assert written(admin, execution) == before


# -- claim_attempt -------------------------------------------------------------------------------------------------


def claim(worker: Connection, execution: Execution, *, attempt: int) -> Execution | None:
    return AttemptLedger(worker).claim_attempt(
        execution.tenant_id, execution.id, SYSTEM, attempt=attempt, correlation_id="corr-guard"
    )


@pytest.mark.parametrize("attempt", [3, 4, 10])
def test_claim_attempt_ahead_of_the_count_returns_none_and_writes_nothing(
    conn: Connection, worker: Connection, admin: Connection, tenant_id: UUID, attempt: int
) -> None:
    execution = processing(conn, tenant_id)
    before = written(admin, execution)

    assert claim(worker, execution, attempt=attempt) is None

    assert written(admin, execution) == before


def test_claim_attempt_already_claimed_returns_none_and_writes_nothing(
    conn: Connection, worker: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # Two consumers holding the same SQS message: the first claim moves the count, the second finds it moved.
    execution = processing(conn, tenant_id)
    first = claim(worker, execution, attempt=2)
    assert first is not None
    assert first.attempt_count == 2
    before = written(admin, execution)

    assert claim(worker, execution, attempt=2) is None

    assert written(admin, execution) == before


def test_claim_attempt_after_the_execution_left_processing_returns_none_and_writes_nothing(
    conn: Connection, worker: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution = processing(conn, tenant_id)
    ExecutionRepository(conn).settle_from_processing(tenant_id, execution.id, CTX, provider_reference="sbx_guard3")
    before = written(admin, execution)

    # attempt 2 follows the one attempt made: only the status guard stands in the way.
    assert claim(worker, execution, attempt=2) is None

    assert written(admin, execution) == before


def test_claim_attempt_for_the_next_attempt_is_recorded_with_its_event_and_outbox_row(
    conn: Connection, worker: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # The control for the refusals above.
    execution = processing(conn, tenant_id)
    retry_scheduled(conn, execution, attempt=1)
    before = written(admin, execution)

    claimed = claim(worker, execution, attempt=2)

    assert claimed is not None
    assert (claimed.attempt_count, claimed.next_attempt_at) == (2, None)
    after = written(admin, execution)
    assert (after["billing_execution_events"], after["billing_outbox"]) == (
        before["billing_execution_events"] + 1,
        before["billing_outbox"] + 1,
    )
