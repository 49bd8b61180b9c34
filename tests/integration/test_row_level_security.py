"""Row-level security as a second wall: without the per-transaction tenant setting a query sees nothing.

Superusers bypass row-level security, so these tests act as an ordinary application role, as the functions
do in AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.workflow import WorkflowWriteContext
from tests.factories import create_execution

APP_ROLE = "billing_app_probe"
CTX = WorkflowWriteContext.service_default()


@pytest.fixture(scope="module")
def app_role(db_url: str) -> str:
    with connect(db_url) as admin:
        admin.execute(
            f"""
            do $$ begin create role {APP_ROLE} nologin; exception when duplicate_object then null; end $$;
            grant usage on schema billing to {APP_ROLE};
            grant select, insert, update on all tables in schema billing to {APP_ROLE};
            grant execute on all functions in schema billing to {APP_ROLE};
            """
        )
    return APP_ROLE


@pytest.fixture
def app_conn(db_url: str, app_role: str) -> Iterator[Connection]:
    with connect(db_url) as connection:
        connection.execute(f"set role {app_role}")
        yield connection


def _count(conn: Connection, *tenants: UUID) -> int:
    row = conn.execute(
        "select count(*) as n from billing.billing_executions where tenant_id = any(%s)", [list(tenants)]
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_query_without_tenant_setting_sees_no_rows(conn: Connection, app_conn: Connection) -> None:
    tenant = uuid4()
    create_execution(conn, tenant)
    assert _count(conn, tenant) == 1  # the superuser sees it
    assert _count(app_conn, tenant) == 0
    with app_conn.transaction():
        assert app_conn.execute("select count(*) as n from billing.billing_execution_events").fetchone() == {"n": 0}


def test_tenant_scope_sees_only_its_own_rows(conn: Connection, app_conn: Connection) -> None:
    mine, theirs = uuid4(), uuid4()
    create_execution(conn, mine)
    create_execution(conn, theirs)
    with tenant_transaction(app_conn, mine):
        assert _count(app_conn, mine, theirs) == 1
        assert _count(app_conn, theirs) == 0


def test_system_scope_sees_all_tenants(conn: Connection, app_conn: Connection) -> None:
    a, b = uuid4(), uuid4()
    create_execution(conn, a)
    create_execution(conn, b)
    with system_transaction(app_conn):
        assert _count(app_conn, a, b) == 2


def test_tenant_scope_cannot_write_another_tenants_row(conn: Connection, app_conn: Connection) -> None:
    mine, theirs = uuid4(), uuid4()
    execution = create_execution(conn, theirs)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(app_conn, mine):
        app_conn.execute(
            "insert into billing.billing_execution_events (tenant_id, id, execution_id, type, new_status)"
            " values (%s, %s, %s, 'billing.execution.pending', 'pending')",
            [theirs, uuid4(), execution.id],
        )


def test_setting_does_not_outlive_its_transaction(app_conn: Connection, conn: Connection) -> None:
    tenant = uuid4()
    create_execution(conn, tenant)
    with tenant_transaction(app_conn, tenant):
        assert _count(app_conn, tenant) == 1
    assert _count(app_conn, tenant) == 0


def test_repository_lifecycle_works_under_row_level_security(app_conn: Connection) -> None:
    tenant = uuid4()
    repo = ExecutionRepository(app_conn)
    execution = create_execution(app_conn, tenant)
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
    from billing.db.tenancy import run_in_tenant_scope

    tenant = uuid4()
    execution = create_execution(conn, tenant)
    with pytest.raises(RuntimeError), conn.transaction():
        run_in_tenant_scope(
            conn,
            tenant,
            "update billing.billing_executions set status = 'pending' where tenant_id = %s and id = %s",
            [tenant, execution.id],
        )
        raise RuntimeError("caller gives up")
    assert ExecutionRepository(conn).get(tenant, execution.id) == execution


def test_nested_scope_restores_the_enclosing_scope_when_it_ends(conn: Connection) -> None:
    from billing.db.tenancy import system_transaction as system

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
