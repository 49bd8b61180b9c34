"""Row-level security as a second wall, keyed on roles: a transaction sees only the tenant it names, and only
billing_worker may span tenants. Every test connects as the run-time roles production uses.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.workflow import WorkflowWriteContext
from tests.factories import create_execution

CTX = WorkflowWriteContext.service_default()


def _count(conn: Connection, *tenants: UUID) -> int:
    row = conn.execute(
        "select count(*) as n from billing.billing_executions where tenant_id = any(%s)", [list(tenants)]
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_query_without_tenant_setting_sees_no_rows(conn: Connection, admin: Connection) -> None:
    tenant = uuid4()
    create_execution(conn, tenant)
    assert _count(admin, tenant) == 1  # the admin (superuser) sees it
    assert _count(conn, tenant) == 0
    with conn.transaction():
        assert conn.execute("select count(*) as n from billing.billing_execution_events").fetchone() == {"n": 0}


def test_tenant_scope_sees_only_its_own_rows(conn: Connection) -> None:
    mine, theirs = uuid4(), uuid4()
    create_execution(conn, mine)
    create_execution(conn, theirs)
    with tenant_transaction(conn, mine):
        assert _count(conn, mine, theirs) == 1
        assert _count(conn, theirs) == 0


def test_system_scope_sees_all_tenants_only_for_the_worker_role(conn: Connection, worker_db_url: str) -> None:
    from billing.db.connection import connect

    a, b = uuid4(), uuid4()
    create_execution(conn, a)
    create_execution(conn, b)
    with system_transaction(conn):
        assert _count(conn, a, b) == 0
    with connect(worker_db_url) as worker, system_transaction(worker):
        assert _count(worker, a, b) == 2


def test_tenant_scope_cannot_write_another_tenants_row(conn: Connection) -> None:
    mine, theirs = uuid4(), uuid4()
    execution = create_execution(conn, theirs)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, mine):
        conn.execute(
            "insert into billing.billing_execution_events (tenant_id, id, execution_id, type, new_status)"
            " values (%s, %s, %s, 'billing.execution.pending', 'pending')",
            [theirs, uuid4(), execution.id],
        )


def test_setting_does_not_outlive_its_transaction(conn: Connection) -> None:
    tenant = uuid4()
    create_execution(conn, tenant)
    with tenant_transaction(conn, tenant):
        assert _count(conn, tenant) == 1
    assert _count(conn, tenant) == 0


def test_repository_lifecycle_works_under_row_level_security(conn: Connection) -> None:
    tenant = uuid4()
    repo = ExecutionRepository(conn)
    execution = create_execution(conn, tenant)
    repo.mark_pending(tenant, execution.id, CTX)
    repo.mark_processing(tenant, execution.id, CTX)
    repo.mark_completed(tenant, execution.id, CTX, provider_reference=f"ch_{execution.id.hex}")
    assert [e.new_status for e in repo.events(tenant, execution.id)][-1] == "completed"
    assert len(repo.workflow_phases(tenant, execution.id)) == 4
    assert repo.get(uuid4(), execution.id) is None


def test_tenant_scope_carries_statement_and_lock_timeouts(conn: Connection) -> None:
    with tenant_transaction(conn, uuid4()):
        row = conn.execute(
            "select current_setting('statement_timeout') as st, current_setting('lock_timeout') as lt"
        ).fetchone()
    assert row == {"st": "5s", "lt": "2s"}
    after = conn.execute("select current_setting('statement_timeout') as st").fetchone()
    assert after == {"st": "0"}


def test_failed_scoped_statement_leaves_connection_idle_and_usable(conn: Connection) -> None:
    from psycopg import pq

    from billing.db.tenancy import run_in_tenant_scope

    tenant = uuid4()
    with pytest.raises(psycopg.errors.DivisionByZero):
        run_in_tenant_scope(conn, tenant, "select 1 / 0", [])
    assert conn.info.transaction_status is pq.TransactionStatus.IDLE
    assert run_in_tenant_scope(conn, tenant, "select current_setting('billing.tenant_id') as t", []) == [
        {"t": str(tenant)}
    ]


def test_scoped_statement_inside_callers_transaction_is_undone_with_it(conn: Connection) -> None:
    tenant = uuid4()
    execution = create_execution(conn, tenant)
    with pytest.raises(RuntimeError), conn.transaction():
        ExecutionRepository(conn).mark_pending(tenant, execution.id, CTX)
        raise RuntimeError("caller gives up")
    assert ExecutionRepository(conn).get(tenant, execution.id) == execution


def test_nested_scope_restores_the_enclosing_scope_when_it_ends(conn: Connection) -> None:
    system = system_transaction
    scope = "select current_setting('billing.scope') as scope, current_setting('billing.tenant_id') as tenant"
    with system(conn):
        with tenant_transaction(conn, uuid4()):
            inner = conn.execute(scope).fetchone()
        after = conn.execute(scope).fetchone()
    assert inner is not None
    assert inner["scope"] == "tenant"
    assert after == {"scope": "system", "tenant": ""}


def test_scopes_bound_idle_time_inside_a_transaction(conn: Connection) -> None:
    with tenant_transaction(conn, uuid4()):
        row = conn.execute("select current_setting('idle_in_transaction_session_timeout') as idle").fetchone()
    assert row == {"idle": "10s"}
