"""Triple-layer idempotency under real concurrency: many threads, one PostgreSQL, exactly one winner."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from uuid import UUID

import pytest

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.domain.errors import IdempotencyKeyReused, TransitionConflict, ValidationFailed
from billing.domain.execution import Execution
from billing.domain.workflow import WorkflowWriteContext
from billing.services.execution_service import CreateOutcome, ExecutionService
from tests.factories import count_rows, create_execution, execution_request

THREADS = 32
CTX = WorkflowWriteContext.service_default()
T = TypeVar("T")


def _race(db_url: str, work: Callable[[Connection], T]) -> list[T | BaseException]:
    """Run `work` on THREADS connections released at the same instant; results or raised errors."""
    connections = [connect(db_url) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)

    def run(conn: Connection) -> T | BaseException:
        barrier.wait()
        try:
            return work(conn)
        except Exception as exc:
            return exc

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(run, connections))
    finally:
        for conn in connections:
            conn.close()


def _create(tenant_id: UUID, key: str, amount: int = 1999) -> Callable[[Connection], CreateOutcome]:
    def work(conn: Connection) -> CreateOutcome:
        return ExecutionService(ExecutionRepository(conn)).create(
            tenant_id,
            execution_request(amount=amount),
            idempotency_key=key,
            payment_provider="sandbox",
            correlation_id=None,
            context=CTX,
        )

    return work


def test_same_key_from_32_threads_creates_one_execution_event_and_outbox_row(
    db_url: str, admin: Connection, tenant_id: UUID
) -> None:
    outcomes = _race(db_url, _create(tenant_id, "same-key"))

    assert all(isinstance(o, CreateOutcome) for o in outcomes), outcomes
    created = [o for o in outcomes if isinstance(o, CreateOutcome) and o.created]
    assert len(created) == 1
    assert {o.execution.id for o in outcomes if isinstance(o, CreateOutcome)} == {created[0].execution.id}
    assert count_rows(admin, "billing_executions", tenant_id) == 1
    assert count_rows(admin, "billing_execution_events", tenant_id) == 1
    assert count_rows(admin, "billing_outbox", tenant_id) == 1
    assert count_rows(admin, "contract_term_datetimes", tenant_id) == 1


def test_same_key_with_different_parameters_raises_reused_and_writes_nothing(
    conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    first = _create(tenant_id, "key-1", amount=1000)(conn)
    with pytest.raises(IdempotencyKeyReused) as caught:
        _create(tenant_id, "key-1", amount=2000)(conn)
    assert caught.value.context["execution_id"] == str(first.execution.id)
    assert count_rows(admin, "billing_executions", tenant_id) == 1


def test_replay_of_pending_execution_returns_it_without_new_rows(
    conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    first = _create(tenant_id, "key-p")(conn)
    ExecutionRepository(conn).mark_pending(tenant_id, first.execution.id, CTX)
    replay = _create(tenant_id, "key-p")(conn)
    assert (replay.created, replay.execution.id, replay.execution.status) == (False, first.execution.id, "pending")
    assert count_rows(admin, "billing_execution_events", tenant_id) == 2


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "tab\tkey", "ünïcode"])
def test_invalid_idempotency_key_rejected_before_any_write(
    conn: Connection, admin: Connection, tenant_id: UUID, key: str
) -> None:
    with pytest.raises(ValidationFailed):
        _create(tenant_id, key)(conn)
    assert count_rows(admin, "billing_executions", tenant_id) == 0


def test_32_threads_racing_mark_processing_one_wins_31_conflicts(
    db_url: str, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution = create_execution(conn, tenant_id)
    ExecutionRepository(conn).mark_pending(tenant_id, execution.id, CTX)

    outcomes = _race(db_url, lambda c: ExecutionRepository(c).mark_processing(tenant_id, execution.id, CTX))

    winners = [o for o in outcomes if isinstance(o, Execution)]
    conflicts = [o for o in outcomes if isinstance(o, TransitionConflict)]
    assert (len(winners), len(conflicts)) == (1, THREADS - 1)
    assert all(c.actual == "processing" for c in conflicts)
    # created + pending + one processing: the losers wrote nothing.
    assert count_rows(admin, "billing_execution_events", tenant_id) == 3
    assert count_rows(admin, "billing_outbox", tenant_id) == 3
    assert count_rows(admin, "contract_term_datetimes", tenant_id) == 3
