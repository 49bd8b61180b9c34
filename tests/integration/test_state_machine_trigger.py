"""The database enforces the state machine and immutability even for raw SQL that bypasses the application."""

from __future__ import annotations

import itertools
from uuid import UUID

import psycopg
import pytest

from billing.db.connection import Connection
from billing.domain.status import ALLOWED_TRANSITIONS, ExecutionStatus, is_terminal
from tests.factories import create_execution

ALL_PAIRS = [(a, b) for a, b in itertools.product(ExecutionStatus, ExecutionStatus) if a != b]


def _force_status(conn: Connection, tenant_id: UUID, execution_id: UUID, path: list[ExecutionStatus]) -> None:
    """Walk an execution along allowed raw-SQL updates to reach path[-1]."""
    for status in path:
        conn.execute(
            "update billing.billing_executions set status = %s, provider_reference = coalesce(provider_reference,"
            " 'ref-' || id::text) where tenant_id = %s and id = %s",
            [status.value, tenant_id, execution_id],
        )


# Shortest allowed route from created to each status, used to set up the pair tests with raw SQL.
ROUTE = {
    ExecutionStatus.CREATED: [],
    ExecutionStatus.PENDING: [ExecutionStatus.PENDING],
    ExecutionStatus.PROCESSING: [ExecutionStatus.PENDING, ExecutionStatus.PROCESSING],
    ExecutionStatus.COMPLETED: [ExecutionStatus.PENDING, ExecutionStatus.COMPLETED],
    ExecutionStatus.FAILED: [ExecutionStatus.PENDING, ExecutionStatus.FAILED],
    ExecutionStatus.CANCELED: [ExecutionStatus.CANCELED],
}


def test_transition_table_in_sql_equals_python_table(conn: Connection) -> None:
    rows = conn.execute("select from_status, to_status from billing.execution_status_transitions").fetchall()
    in_sql = {(ExecutionStatus(r["from_status"]), ExecutionStatus(r["to_status"])) for r in rows}
    assert in_sql == ALLOWED_TRANSITIONS


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_raw_sql_update_status_pair_accepted_only_if_allowed(
    conn: Connection, tenant_id: UUID, old: ExecutionStatus, new: ExecutionStatus
) -> None:
    execution = create_execution(conn, tenant_id)
    _force_status(conn, tenant_id, execution.id, ROUTE[old])
    update = "update billing.billing_executions set status = %s where tenant_id = %s and id = %s"
    if (old, new) in ALLOWED_TRANSITIONS:
        conn.execute(update, [new.value, tenant_id, execution.id])
        row = conn.execute(
            "select status from billing.billing_executions where tenant_id = %s and id = %s",
            [tenant_id, execution.id],
        ).fetchone()
        assert row is not None
        assert row["status"] == new.value
    else:
        expected_state = "BE001" if is_terminal(old) else "BE002"
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(update, [new.value, tenant_id, execution.id])
        assert caught.value.sqlstate == expected_state


@pytest.mark.parametrize("terminal", [ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELED])
def test_raw_sql_update_of_any_column_on_terminal_row_rejected(
    conn: Connection, tenant_id: UUID, terminal: ExecutionStatus
) -> None:
    execution = create_execution(conn, tenant_id)
    _force_status(conn, tenant_id, execution.id, ROUTE[terminal])
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "update billing.billing_executions set metadata = '{\"x\": 1}' where tenant_id = %s and id = %s",
            [tenant_id, execution.id],
        )
    assert caught.value.sqlstate == "BE001"


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("tenant_id", "00000000-0000-0000-0000-000000000001"),
        ("id", "00000000-0000-0000-0000-000000000002"),
        ("amount", "1"),
        ("currency", "USD"),
        ("idempotency_key", "another-key"),
    ],
)
def test_raw_sql_update_of_identity_or_money_column_rejected(
    conn: Connection, tenant_id: UUID, column: str, value: str
) -> None:
    execution = create_execution(conn, tenant_id, amount=500)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(
            f"update billing.billing_executions set {column} = %s where tenant_id = %s and id = %s",
            [value, tenant_id, execution.id],
        )
    assert caught.value.sqlstate == "BE003"


def test_raw_sql_change_of_recorded_provider_reference_rejected(conn: Connection, tenant_id: UUID) -> None:
    execution = create_execution(conn, tenant_id)
    conn.execute(
        "update billing.billing_executions set provider_reference = 'ref-1' where tenant_id = %s and id = %s",
        [tenant_id, execution.id],
    )
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "update billing.billing_executions set provider_reference = 'ref-2' where tenant_id = %s and id = %s",
            [tenant_id, execution.id],
        )
    assert caught.value.sqlstate == "BE003"


def test_raw_sql_delete_of_execution_rejected(conn: Connection, tenant_id: UUID) -> None:
    execution = create_execution(conn, tenant_id)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(
            "delete from billing.billing_executions where tenant_id = %s and id = %s", [tenant_id, execution.id]
        )
    assert caught.value.sqlstate == "BE004"


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("amount", 0, "billing_executions_amount_positive"),
        ("amount", -5, "billing_executions_amount_positive"),
        ("currency", "eur", "billing_executions_currency_iso4217"),
        ("status", "settled", "billing_executions_status_known"),
        ("payment_rail", "wire", "billing_executions_payment_rail_known"),
    ],
)
def test_raw_sql_insert_with_invalid_value_rejected_by_named_constraint(
    conn: Connection, tenant_id: UUID, column: str, value: object, constraint: str
) -> None:
    row: dict[str, object] = {
        "tenant_id": tenant_id,
        "id": "00000000-0000-0000-0000-0000000000aa",
        "entity_contract_id": "c",
        "plan_contract_id": "p",
        "amount": 100,
        "currency": "EUR",
        "status": "created",
        "payment_rail": "card",
        "payment_provider": "sandbox",
        "request_fingerprint": "0" * 64,
    }
    row[column] = value
    columns = ", ".join(row)
    placeholders = ", ".join(f"%({c})s" for c in row)
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        conn.execute(f"insert into billing.billing_executions ({columns}) values ({placeholders})", row)
    assert caught.value.diag.constraint_name == constraint


def test_pending_settlement_without_provider_reference_rejected(conn: Connection, tenant_id: UUID) -> None:
    execution = create_execution(conn, tenant_id)
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        conn.execute(
            "update billing.billing_executions set status = 'pending', submitted_at = now()"
            " where tenant_id = %s and id = %s",
            [tenant_id, execution.id],
        )
    assert caught.value.diag.constraint_name == "billing_executions_submitted_has_reference"
