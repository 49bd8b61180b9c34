"""Raw SQL as the run-time roles, for tests of the guards the database enforces whatever the application does.

Executions are brought to a status through the repository (as billing_app, as in production), then attacked with
plain statements on a connection of the role under test, inside a tenant scope so row-level security is not what
refuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import ProviderReversal, Reversal, ReversalRepository
from billing.db.roles import EXECUTION_WRITERS, DatabaseRole, login_url
from billing.db.tenancy import tenant_transaction
from billing.domain.execution import Execution, PaymentRail
from billing.domain.money import Money
from billing.domain.reversals import ReversalKind, ReversalStatus
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from tests.factories import create_execution

CTX = WorkflowWriteContext.service_default()
S = ExecutionStatus


@pytest.fixture(params=EXECUTION_WRITERS, ids=[role.value for role in EXECUTION_WRITERS])
def role_conn(request: pytest.FixtureRequest, admin_db_url: str) -> Iterator[Connection]:
    """A connection as each run-time role in turn (the test runs once per role)."""
    with connect(login_url(admin_db_url, request.param)) as connection:
        yield connection


def role_of(conn: Connection) -> DatabaseRole:
    row = conn.execute("select current_user as name").fetchone()
    assert row is not None
    return next(role for role in DatabaseRole if row["name"].startswith(role.value))


def run(conn: Connection, tenant_id: UUID, statement: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
    """One statement in its own committed tenant-scoped transaction (deferred checks run at its commit)."""
    with tenant_transaction(conn, tenant_id):
        conn.execute(statement, params)


def refusal(conn: Connection, tenant_id: UUID, statement: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> str:
    """The SQLSTATE with which the database refuses `statement` (at the statement or at its commit)."""
    with pytest.raises(psycopg.Error) as caught:
        run(conn, tenant_id, statement, params)
    assert caught.value.sqlstate is not None
    return caught.value.sqlstate


@contextmanager
def rolled_back(conn: Connection, tenant_id: UUID) -> Iterator[Connection]:
    """A tenant-scoped transaction that never commits (so commit-time checks never run)."""
    with conn.transaction(force_rollback=True), tenant_transaction(conn, tenant_id):
        yield conn


def execution_in(app_conn: Connection, tenant_id: UUID, status: ExecutionStatus, **overrides: Any) -> Execution:
    """An execution brought to `status` through the repository's own transitions."""
    execution = create_execution(app_conn, tenant_id, **overrides)
    repository = ExecutionRepository(app_conn)
    reference = f"ref_{uuid4().hex}"
    steps: list[Callable[[], Execution]] = {
        S.CREATED: [],
        S.PENDING: [lambda: repository.mark_pending(tenant_id, execution.id, CTX)],
        S.PROCESSING: [
            lambda: repository.mark_pending(tenant_id, execution.id, CTX),
            lambda: repository.mark_processing(tenant_id, execution.id, CTX),
        ],
        S.COMPLETED: [
            lambda: repository.mark_pending(tenant_id, execution.id, CTX),
            lambda: repository.mark_processing(tenant_id, execution.id, CTX),
            lambda: repository.mark_completed(tenant_id, execution.id, CTX, provider_reference=reference),
        ],
        S.FAILED: [
            lambda: repository.mark_pending(tenant_id, execution.id, CTX),
            lambda: repository.mark_processing(tenant_id, execution.id, CTX),
            lambda: repository.mark_failed(tenant_id, execution.id, CTX, error_code="card_declined"),
        ],
        S.CANCELED: [lambda: repository.mark_canceled(tenant_id, execution.id, CTX, from_status=S.CREATED)],
    }[status]
    result = execution
    for step in steps:
        result = step()
    return result


def submitted_execution(app_conn: Connection, tenant_id: UUID) -> Execution:
    """A SEPA debit pending settlement at the provider (submitted_at and provider_reference set)."""
    execution = execution_in(app_conn, tenant_id, S.PROCESSING, payment_rail=PaymentRail.SEPA_DEBIT)
    return ExecutionRepository(app_conn).settle_from_processing(
        tenant_id, execution.id, CTX, provider_reference=f"ref_{uuid4().hex}"
    )


def provider_reversal_of(app_conn: Connection, execution: Execution, *, amount: int | None = None) -> Reversal:
    """A chargeback of a completed execution, recorded as the webhook path records one (as the app role)."""
    reversal = ReversalRepository(app_conn).record_provider_reversal(
        ProviderReversal(
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            provider="sandbox",
            provider_event_id=f"evt_{uuid4().hex}",
            provider_event_type="chargeback",
            kind=ReversalKind.CHARGEBACK,
            money=Money(amount or execution.amount, execution.currency),
            status=ReversalStatus.SUCCEEDED,
            provider_reference=None,
            reason="fraudulent",
            occurred_at=datetime.now(UTC),
        ),
        context=WorkflowWriteContext.webhook("sandbox"),
        correlation_id=None,
        metadata={},
    )
    assert reversal is not None
    return reversal
