"""Factories for requests and executions, so tests state only what matters to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.domain.execution import Execution, ExecutionRequest, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.services.ports import RetryRequest

# A card payment request body as an API client sends it; tok_visa succeeds at the sandbox provider.
CARD_REQUEST: dict[str, Any] = {
    "entity_contract_id": "contract-1",
    "plan_contract_id": "plan-monthly",
    "amount": 1999,
    "currency": "EUR",
    "payment_rail": "card",
    "payment_instrument_id": "tok_visa",
}


def execution_request(**overrides: Any) -> ExecutionRequest:
    fields: dict[str, Any] = {
        "entity_contract_id": "contract-1",
        "plan_contract_id": "plan-monthly",
        "amount": 1999,
        "currency": "EUR",
        "payment_rail": PaymentRail.CARD,
        "metadata": {"invoice": "INV-1"},
    }
    fields.update(overrides)
    return ExecutionRequest.model_validate(fields)


def create_execution(
    conn: Connection, tenant_id: UUID, *, idempotency_key: str | None = None, **overrides: Any
) -> Execution:
    """A committed execution in status created, written through the repository on billing_app's `conn` (workers
    never create executions)."""
    repository = ExecutionRepository(conn)
    execution, created = repository.insert_idempotent(
        tenant_id,
        execution_request(**overrides),
        idempotency_key=idempotency_key or f"key-{uuid4()}",
        payment_provider="sandbox",
        correlation_id="corr-test",
        context=WorkflowWriteContext.service_default(),
    )
    assert created
    return execution


def in_memory_execution(**overrides: Any) -> Execution:
    """An Execution as the repository would return it, for pure code that needs no database."""
    now = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)
    fields: dict[str, Any] = {
        "tenant_id": uuid4(),
        "id": uuid4(),
        "entity_contract_id": "contract-1",
        "plan_contract_id": "plan-monthly",
        "amount": 1999,
        "currency": "EUR",
        "status": ExecutionStatus.PROCESSING,
        "payment_rail": PaymentRail.CARD,
        "payment_provider": "sandbox",
        "payment_instrument_id": "tok_visa",
        "provider_reference": None,
        "idempotency_key": "order-1",
        "request_fingerprint": "0" * 64,
        "correlation_id": "corr-1",
        "metadata": {},
        "attempt_count": 0,
        "last_error_code": None,
        "next_attempt_at": None,
        "created_at": now,
        "updated_at": now,
        "submitted_at": None,
        "finished_at": None,
    }
    fields.update(overrides)
    return Execution(**fields)


def count_rows(admin: Connection, table: str, tenant_id: UUID) -> int:
    """Rows of `tenant_id` in billing.`table`, counted on the admin's inspection connection.

    Refuses any other connection: under row-level security (or without the privilege) a run-time role would
    count zero rows, and every "writes nothing" assertion would pass without looking.
    """
    role = admin.execute(
        "select rolbypassrls or rolsuper as sees_all from pg_roles where rolname = current_user"
    ).fetchone()
    assert role is not None
    assert role["sees_all"], "count_rows inspects as the admin (the `admin` fixtures)"
    row = admin.execute(f"select count(*) as n from billing.{table} where tenant_id = %s", [tenant_id]).fetchone()
    assert row is not None
    return int(row["n"])


class QuietObserver:
    """An ExecutionObserver for tests that do not look at logs or metrics."""

    def rail_call(self, execution: Execution, **details: Any) -> None:
        pass

    def execution_result(self, execution: Execution, **details: Any) -> None:
        pass


@dataclass
class RecordingRetryScheduler:
    """A RetryScheduler that keeps the requests instead of sending them."""

    requests: list[RetryRequest] = field(default_factory=list)

    def schedule(self, request: RetryRequest) -> None:
        self.requests.append(request)
