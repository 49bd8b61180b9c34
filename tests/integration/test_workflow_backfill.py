"""The historical backfill creates one workflow row per recorded event, deterministically and only once."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection, connect
from billing.db.migrations import apply_migrations, discover
from billing.domain.transitions import CREATED_EVENT_TYPE, TRANSITIONS
from billing.domain.workflow import BillingWorkflowConfig, WorkflowPhase

BACKFILL = "20260403_billing_workflow_event_backfill"
BEFORE_WORKFLOW_TABLE = "20260329_create_billing_outbox"

# An old-system history: a SEPA debit that went async and was confirmed, and a card payment that was canceled.
HISTORIES = [
    [(None, "created", CREATED_EVENT_TYPE), ("created", "pending", "billing.execution.pending"),
     ("pending", "processing", "billing.execution.processing"),
     ("processing", "pending", "billing.execution.settlement_pending"),
     ("pending", "completed", "billing.execution.confirmed")],
    [(None, "created", CREATED_EVENT_TYPE), ("created", "canceled", "billing.execution.canceled")],
]  # fmt: skip


def _seed_old_system_rows(conn: Connection, tenant_id: UUID) -> list[tuple[UUID, UUID, str]]:
    """Raw inserts as the replaced system wrote them; returns (execution_id, event_id, type) per event."""
    seeded = []
    for number, history in enumerate(HISTORIES):
        execution_id = uuid4()
        conn.execute(
            "insert into billing.billing_executions (tenant_id, id, entity_contract_id, plan_contract_id, amount,"
            " currency, status, payment_rail, payment_provider, provider_reference, idempotency_key,"
            " request_fingerprint, submitted_at) values (%s, %s, 'contract-old', 'plan', 1000, 'EUR', %s,"
            " 'sepa_debit', 'sandbox', %s, %s, %s, now())",
            [tenant_id, execution_id, history[-1][1], f"ref-{number}", f"old-{number}", "a" * 64],
        )
        for step, (old, new, event_type) in enumerate(history):
            event_id = uuid4()
            conn.execute(
                "insert into billing.billing_execution_events (tenant_id, id, execution_id, type, old_status,"
                " new_status, occurred_at) values (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s))",
                [tenant_id, event_id, execution_id, event_type, old, new, step],
            )
            seeded.append((execution_id, event_id, event_type))
    return seeded


def _expected_phase(event_type: str) -> WorkflowPhase:
    if event_type == CREATED_EVENT_TYPE:
        return WorkflowPhase.CREATED
    return next(spec.phase for spec in TRANSITIONS.values() if spec.event_type == event_type)


def test_backfill_on_database_seeded_before_workflow_table_creates_one_row_per_event_once(
    database_factory: Callable[[], str],
) -> None:
    tenant_id = uuid4()
    with connect(database_factory()) as conn:
        apply_migrations(conn, target=BEFORE_WORKFLOW_TABLE)
        seeded = _seed_old_system_rows(conn, tenant_id)
        apply_migrations(conn)

        rows = conn.execute(
            "select transition_id, event_id, phase_code, source from billing.contract_term_datetimes"
            " where tenant_id = %s",
            [tenant_id],
        ).fetchall()
        by_event = {row["event_id"]: row for row in rows}
        assert len(rows) == len(seeded)
        for execution_id, event_id, event_type in seeded:
            key = f"{BillingWorkflowConfig.WORKFLOW_KEY}:{tenant_id}:{execution_id}:{event_id}"
            assert by_event[event_id]["transition_id"] == hashlib.sha256(key.encode()).hexdigest()
            assert by_event[event_id]["phase_code"] == _expected_phase(event_type)
            assert by_event[event_id]["source"] == "backfill"

        backfill_sql = next(m.sql for m in discover() if m.version == BACKFILL)
        with conn.transaction():
            conn.execute(backfill_sql.encode())  # the whole file again, as a second run would
        count = conn.execute(
            "select count(*) as n from billing.contract_term_datetimes where tenant_id = %s", [tenant_id]
        ).fetchone()
        assert count == {"n": len(seeded)}


@pytest.mark.parametrize("event_type", [CREATED_EVENT_TYPE, *(s.event_type for s in TRANSITIONS.values())])
def test_sql_phase_mapping_agrees_with_transition_table(conn: Connection, event_type: str) -> None:
    row = conn.execute("select billing.workflow_phase_for_event(%s) as phase", [event_type]).fetchone()
    assert row == {"phase": _expected_phase(event_type).value}
