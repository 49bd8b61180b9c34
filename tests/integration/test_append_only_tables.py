"""History is append-only, and companion rows (events, outbox, workflow) exist only with the change they record.

Each test runs as billing_app and as billing_worker with raw SQL (`role_conn`), the roles the functions use.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.types.json import Jsonb

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import DatabaseRole
from billing.db.sqlstates import GuardState
from billing.domain.transitions import RETRY_SCHEDULED_EVENT_TYPE
from tests.integration.raw_sql import (
    CTX,
    S,
    execution_in,
    provider_reversal_of,
    refusal,
    role_conn,
    role_of,
    rolled_back,
    run,
)

__all__ = ["role_conn"]  # a fixture, imported for the tests below

APPEND_ONLY = ["billing_execution_events", "contract_term_datetimes", "execution_reversals"]
REFERENCE_TABLES = ["execution_status_transitions", "execution_event_types", "execution_event_transitions"]
DENIED = "42501"  # insufficient_privilege

_EVENT = """
insert into billing.billing_execution_events (tenant_id, id, execution_id, type, old_status, new_status)
values (%(tenant)s, %(event_id)s, %(id)s, %(type)s, %(old)s, %(new)s)
"""
_OUTBOX = """
insert into billing.billing_outbox (tenant_id, event_id, aggregate_id, event_type, payload)
select e.tenant_id, %(event_id)s, e.id, %(type)s,
       billing.execution_event_payload(e, %(event_id)s, %(type)s, %(old)s, null, now())
  from billing.billing_executions e where e.tenant_id = %(tenant)s and e.id = %(id)s
"""
# A pending execution canceled by hand: the raw change the companion-row tests build on.
_CANCEL = (
    "update billing.billing_executions set status = 'canceled', finished_at = now()"
    " where tenant_id = %(tenant)s and id = %(id)s"
)
_WORKFLOW = """
insert into billing.contract_term_datetimes (tenant_id, transition_id, workflow_key, contract_id, subject_type,
    subject_id, event_id, phase_code, term_at, source, actor_id)
values (%(tenant)s, repeat('a', 64), 'wf:billing.execution', 'contract-1', 'billing_execution', %(id)s,
    %(event_id)s, %(phase)s, now(), 'service', 'attacker')
"""


# An outbox row with a payload of the caller's choosing (the repository builds it from the committed row instead).
_ANNOUNCE = (
    "insert into billing.billing_outbox (tenant_id, event_id, aggregate_id, event_type, payload)"
    " values (%(tenant)s, %(event_id)s, %(id)s, %(type)s, %(payload)s)"
)


def _announcement(params: dict[str, Any]) -> dict[str, Any]:
    """The payload fields the outbox check compares, agreeing with the forged event of `params`."""
    return {
        "event_id": str(params["event_id"]),
        "execution_id": str(params["id"]),
        "tenant_id": str(params["tenant"]),
        "event_type": params["type"],
        "old_status": params["old"],
        "new_status": params["new"],
    }


def _forged(execution: Any, event_type: str, old: str | None, new: str, **extra: Any) -> dict[str, Any]:
    return {
        "tenant": execution.tenant_id,
        "id": execution.id,
        "event_id": uuid4(),
        "type": event_type,
        "old": old,
        "new": new,
        **extra,
    }


def _one_transaction(conn: Connection, tenant_id: UUID, *statements: tuple[str, dict[str, Any]]) -> str | None:
    """Run the statements in one committed transaction; the SQLSTATE that refused them, or None."""
    try:
        with conn.transaction():
            conn.execute("select set_config('billing.tenant_id', %s, true)", [str(tenant_id)])
            for statement, params in statements:
                conn.execute(statement, params)
    except psycopg.Error as error:
        return error.sqlstate
    return None


def test_forged_failed_event_for_a_completed_execution_is_refused(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    params = _forged(execution, "billing.execution.failed", "processing", "failed")
    # A careful forger announces the event exactly as it claims: only the event's own check can refuse it.
    announced = {**params, "payload": Jsonb(_announcement(params))}
    refused = _one_transaction(role_conn, tenant_id, (_EVENT, params), (_ANNOUNCE, announced))
    assert refused == GuardState.UNRECORDED_CHANGE


def test_event_naming_a_change_other_than_its_transactions_is_refused(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.PENDING)
    params = _forged(execution, "billing.execution.processing", "pending", "processing")
    refused = _one_transaction(role_conn, tenant_id, (_CANCEL, params), (_EVENT, params), (_OUTBOX, params))
    assert refused == GuardState.UNRECORDED_CHANGE


def test_raw_change_with_its_event_and_outbox_row_commits(
    role_conn: Connection, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # The guards refuse forgeries, not raw SQL as such: a complete write is accepted from either role.
    execution = execution_in(conn, tenant_id, S.PENDING)
    params = _forged(execution, "billing.execution.canceled", "pending", "canceled")
    assert _one_transaction(role_conn, tenant_id, (_CANCEL, params), (_EVENT, params), (_OUTBOX, params)) is None
    row = admin.execute("select status from billing.billing_executions where id = %s", [execution.id]).fetchone()
    assert row == {"status": "canceled"}


def test_second_event_for_one_change_is_refused(role_conn: Connection, conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.PENDING)
    first = _forged(execution, "billing.execution.canceled", "pending", "canceled")
    second = _forged(execution, "billing.execution.canceled", "pending", "canceled")
    statements = [(_CANCEL, first), (_EVENT, first), (_OUTBOX, first), (_EVENT, second), (_OUTBOX, second)]
    assert _one_transaction(role_conn, tenant_id, *statements) == GuardState.UNRECORDED_CHANGE


def test_event_without_outbox_row_is_refused(role_conn: Connection, conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.PENDING)
    params = _forged(execution, "billing.execution.canceled", "pending", "canceled")
    assert _one_transaction(role_conn, tenant_id, (_CANCEL, params), (_EVENT, params)) == GuardState.UNRECORDED_CHANGE


def test_outbox_row_without_an_event_of_its_transaction_is_refused(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    params = _forged(execution, "billing.execution.completed", "processing", "completed")
    assert _one_transaction(role_conn, tenant_id, (_OUTBOX, params)) == GuardState.UNRECORDED_CHANGE


def test_outbox_payload_disagreeing_with_its_event_is_refused(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.PENDING)
    params = _forged(execution, "billing.execution.canceled", "pending", "canceled")
    payload = {**_announcement(params), "old_status": "processing", "new_status": "completed"}
    statements = [(_CANCEL, params), (_EVENT, params), (_ANNOUNCE, {**params, "payload": Jsonb(payload)})]
    assert _one_transaction(role_conn, tenant_id, *statements) == GuardState.UNRECORDED_CHANGE


def test_workflow_row_for_an_event_of_another_transaction_is_refused(
    role_conn: Connection, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # A retry_scheduled event has no workflow row of its own, so only the transaction rule can refuse one.
    execution = execution_in(conn, tenant_id, S.PROCESSING)
    ExecutionRepository(conn).record_retry_scheduled(
        tenant_id, execution.id, CTX, attempt=1, error_code="rate_limited", next_attempt_at=datetime.now(UTC)
    )
    event = admin.execute(
        "select id from billing.billing_execution_events where execution_id = %s and type = %s",
        [execution.id, RETRY_SCHEDULED_EVENT_TYPE],
    ).fetchone()
    assert event is not None
    params = {"tenant": tenant_id, "id": execution.id, "event_id": event["id"], "phase": "processing"}
    assert _one_transaction(role_conn, tenant_id, (_WORKFLOW, params)) == GuardState.UNRECORDED_CHANGE


def test_reversal_of_an_execution_that_is_not_completed_is_refused(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.FAILED)
    statement = (
        "insert into billing.execution_reversals (tenant_id, id, execution_id, provider, provider_event_id,"
        " provider_event_type, occurred_at) values (%s, %s, %s, 'sandbox', 'evt_1', 'refund', now())"
    )
    assert refusal(conn, tenant_id, statement, [tenant_id, uuid4(), execution.id]) == GuardState.UNRECORDED_CHANGE


_REWRITE = {
    "billing_execution_events": "correlation_id = 'rewritten'",
    "contract_term_datetimes": "actor_id = 'rewritten'",
    "execution_reversals": "reason = 'rewritten'",
}


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_runtime_roles_cannot_update_history(role_conn: Connection, tenant_id: UUID, table: str) -> None:
    statement = f"update billing.{table} set {_REWRITE[table]} where tenant_id = %s"
    assert refusal(role_conn, tenant_id, statement, [tenant_id]) == DENIED


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_update_of_history_is_refused_by_trigger_even_for_the_owner(
    admin: Connection, conn: Connection, tenant_id: UUID, table: str
) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    if table == "execution_reversals":  # record one as the webhook path does
        provider_reversal_of(conn, execution)
    with pytest.raises(psycopg.Error) as caught, admin.transaction():
        admin.execute("set local role billing_owner")
        updated = admin.execute(
            f"update billing.{table} set {_REWRITE[table]} where tenant_id = %s", [tenant_id]
        ).rowcount
        assert updated > 0
    # A reversal's status may still move while it is not final; a final one, and its identity, never change.
    expected = GuardState.REVERSAL_CHANGE if table == "execution_reversals" else GuardState.APPEND_ONLY
    assert caught.value.sqlstate == expected


@pytest.mark.parametrize("table", ["billing_executions", *APPEND_ONLY, "billing_outbox"])
def test_runtime_roles_cannot_delete_or_truncate_history(role_conn: Connection, tenant_id: UUID, table: str) -> None:
    assert refusal(role_conn, tenant_id, f"delete from billing.{table} where tenant_id = %s", [tenant_id]) == DENIED
    assert refusal(role_conn, tenant_id, f"truncate billing.{table}") == DENIED


def test_webhook_inbox_cannot_be_deleted_or_truncated_at_run_time(role_conn: Connection, tenant_id: UUID) -> None:
    assert refusal(role_conn, tenant_id, "delete from billing_inbox.webhook_events") == DENIED
    assert refusal(role_conn, tenant_id, "truncate billing_inbox.webhook_events") == DENIED


@pytest.mark.parametrize(
    "table",
    [
        "billing_executions",
        *APPEND_ONLY,
        "billing_outbox",
        "billing_inbox.webhook_events",
        "settlement_reports",
        "settlement_discrepancies",
    ],
)
def test_truncate_is_refused_by_trigger_even_for_the_owner(admin: Connection, table: str) -> None:
    qualified = table if "." in table else f"billing.{table}"
    with pytest.raises(psycopg.Error) as caught, admin.transaction():
        admin.execute("set local role billing_owner")
        admin.execute(f"truncate {qualified} cascade")
    assert caught.value.sqlstate in {GuardState.EXECUTION_NOT_DELETABLE, GuardState.APPEND_ONLY}


@pytest.mark.parametrize("table", REFERENCE_TABLES)
@pytest.mark.parametrize(
    "statement",
    [
        "insert into billing.{table} select * from billing.{table} limit 1",
        "update billing.{table} set {column} = {column}",
        "delete from billing.{table}",
    ],
    ids=["insert", "update", "delete"],
)
def test_reference_tables_cannot_be_written_at_run_time(
    role_conn: Connection, tenant_id: UUID, table: str, statement: str
) -> None:
    column = {
        "execution_status_transitions": "to_status",
        "execution_event_types": "kind",
        "execution_event_transitions": "to_status",
    }[table]
    sql_text = statement.format(table=table, column=column)
    assert refusal(role_conn, tenant_id, sql_text) == DENIED


def test_outbox_payload_rewrite_rejected_but_publication_bookkeeping_allowed(
    db: Connection, app_db: Connection, tenant_id: UUID
) -> None:
    execution_in(app_db, tenant_id, S.CREATED)
    run(
        db,
        tenant_id,
        "update billing.billing_outbox set publish_attempts = publish_attempts + 1,"
        " last_error = 'throttled' where tenant_id = %s",
        [tenant_id],
    )
    statement = "update billing.billing_outbox set payload = '{}' where tenant_id = %s"
    assert refusal(db, tenant_id, statement, [tenant_id]) == GuardState.APPEND_ONLY


def test_outbox_publication_is_recorded_once_and_never_undone(
    db: Connection, app_db: Connection, tenant_id: UUID
) -> None:
    execution_in(app_db, tenant_id, S.CREATED)
    run(db, tenant_id, "update billing.billing_outbox set published_at = now() where tenant_id = %s", [tenant_id])
    for assignment in [
        "published_at = null",
        "published_at = now() + interval '1 minute'",
        "publish_attempts = publish_attempts - 1",
    ]:
        statement = f"update billing.billing_outbox set {assignment} where tenant_id = %s"
        assert refusal(db, tenant_id, statement, [tenant_id]) == GuardState.OUTBOX_PUBLICATION, assignment


def test_only_the_relay_role_publishes(app_db: Connection, private_admin: Connection, tenant_id: UUID) -> None:
    execution_in(app_db, tenant_id, S.CREATED)
    statement = "update billing.billing_outbox set published_at = now() where tenant_id = %s"
    assert refusal(app_db, tenant_id, statement, [tenant_id]) == DENIED
    with pytest.raises(psycopg.Error) as caught, private_admin.transaction():
        private_admin.execute("set local role billing_owner")
        private_admin.execute("select set_config('billing.tenant_id', %s, true)", [str(tenant_id)])
        private_admin.execute(statement, [tenant_id])
    assert caught.value.sqlstate == GuardState.OUTBOX_PUBLICATION


def test_role_conn_is_a_runtime_role(role_conn: Connection) -> None:
    assert role_of(role_conn) in (DatabaseRole.APP, DatabaseRole.WORKER)
    with rolled_back(role_conn, uuid4()):
        row = role_conn.execute("select count(*) as n from billing.billing_executions").fetchone()
    assert row == {"n": 0}
