"""The database enforces the state machine and every column's rule, against raw SQL from the run-time roles.

Each test runs once as billing_app and once as billing_worker (`role_conn`): what an injection or a compromised
function would get. Rows are brought to a status through the repository, then attacked with plain statements.
"""

from __future__ import annotations

import itertools
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.authentication.flow import AUTHENTICATED_EVENT_TYPE, AUTHENTICATION_REQUIRED_EVENT_TYPE
from billing.db.attempts import queue_annotation
from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import DatabaseRole
from billing.db.sqlstates import GuardState
from billing.db.tenancy import pipelined_tenant_transaction
from billing.db.webhook_inbox import AMOUNT_MISMATCH_EVENT_TYPE
from billing.domain.reversals import PAID_AFTER_FAILURE_EVENT_TYPE, REVERSAL_EVENT_TYPES
from billing.domain.status import ALLOWED_TRANSITIONS, ExecutionStatus, is_terminal
from billing.domain.transitions import (
    CREATED_EVENT_TYPE,
    DEAD_LETTERED_EVENT_TYPE,
    REDRIVEN_EVENT_TYPE,
    RETRY_ATTEMPT_EVENT_TYPE,
    RETRY_SCHEDULED_EVENT_TYPE,
    TRANSITIONS,
    TransitionMethod,
)
from billing.domain.workflow import WorkflowWriteContext
from billing.risk.gate import RISK_ASSESSED_EVENT_TYPE
from billing.risk.reviews import REVIEW_APPROVED_EVENT_TYPE
from tests.integration.raw_sql import (
    S,
    execution_in,
    refusal,
    role_conn,
    role_of,
    rolled_back,
    run,
    submitted_execution,
)

__all__ = ["role_conn"]  # a fixture, imported for the tests below

ALL_PAIRS = [(a, b) for a, b in itertools.product(ExecutionStatus, ExecutionStatus) if a != b]
WHERE = " where tenant_id = %(tenant)s and id = %(id)s"

# Every column of billing.billing_executions and the rule that covers it. A column missing here fails
# test_every_column_has_a_rule, so a new column cannot be added without deciding what may happen to it.
IMMUTABLE_VALUES: dict[str, str] = {
    "tenant_id": "'00000000-0000-0000-0000-000000000001'::uuid",
    "id": "'00000000-0000-0000-0000-000000000002'::uuid",
    "entity_contract_id": "'contract-other'",
    "plan_contract_id": "'plan-other'",
    "amount": "123456",
    "currency": "'USD'",
    "payment_rail": "'ach_debit'",
    "payment_provider": "'other_provider'",
    "payment_instrument_id": "'tok_other'",
    "idempotency_key": "'another-key'",
    "request_fingerprint": "repeat('1', 64)",
    "correlation_id": "'corr-other'",
    "metadata": """'{"changed": "yes"}'::jsonb""",
    "created_at": "now() - interval '1 day'",
}
LIFECYCLE_COLUMNS = {
    "status",
    "provider_reference",
    "submitted_at",
    "finished_at",
    "attempt_count",
    "last_error_code",
    "next_attempt_at",
    "updated_at",
    # bookkeeping of the companion-row checks, written only by the trigger
    "changed_txid",
    "changed_statuses",
}


def _ids(execution: Any) -> dict[str, UUID]:
    return {"tenant": execution.tenant_id, "id": execution.id}


def test_every_column_has_a_rule(admin: Connection) -> None:
    rows = admin.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'billing' and table_name = 'billing_executions'"
    ).fetchall()
    assert {row["column_name"] for row in rows} == set(IMMUTABLE_VALUES) | LIFECYCLE_COLUMNS


def test_transition_table_in_sql_equals_python_table(conn: Connection) -> None:
    rows = conn.execute("select from_status, to_status from billing.execution_status_transitions").fetchall()
    in_sql = {(ExecutionStatus(r["from_status"]), ExecutionStatus(r["to_status"])) for r in rows}
    assert in_sql == ALLOWED_TRANSITIONS


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_raw_sql_status_pair_accepted_by_the_trigger_only_if_allowed(
    role_conn: Connection, conn: Connection, tenant_id: UUID, old: ExecutionStatus, new: ExecutionStatus
) -> None:
    execution = execution_in(conn, tenant_id, old)
    # A terminal target needs its finish time and a completion its provider's charge; give the row what the
    # other rules ask for, so that only the state machine decides.
    update = (
        "update billing.billing_executions set status = %(new)s,"
        " finished_at = case when %(terminal)s then now() end,"
        " provider_reference = coalesce(provider_reference, 'ref_' || id::text)" + WHERE
    )
    params = {**_ids(execution), "new": new.value, "terminal": is_terminal(new)}
    if (old, new) in ALLOWED_TRANSITIONS:
        with rolled_back(role_conn, tenant_id):
            row = role_conn.execute(update + " returning status", params).fetchone()
        assert row == {"status": new.value}
    else:
        expected = GuardState.TERMINAL_IMMUTABLE if is_terminal(old) else GuardState.TRANSITION_NOT_ALLOWED
        assert refusal(role_conn, tenant_id, update, params) == expected


def test_raw_sql_status_change_without_its_event_is_refused_at_commit(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.CREATED)
    statement = "update billing.billing_executions set status = 'pending'" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.UNRECORDED_CHANGE


@pytest.mark.parametrize("terminal", [S.COMPLETED, S.FAILED, S.CANCELED])
@pytest.mark.parametrize("column", sorted(set(IMMUTABLE_VALUES) | LIFECYCLE_COLUMNS - {"status"}))
def test_raw_sql_update_of_any_column_on_terminal_row_rejected(
    role_conn: Connection, conn: Connection, tenant_id: UUID, terminal: ExecutionStatus, column: str
) -> None:
    execution = execution_in(conn, tenant_id, terminal)
    value = IMMUTABLE_VALUES.get(column, column)  # a lifecycle column set to itself is still an update
    statement = f"update billing.billing_executions set {column} = {value}" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.TERMINAL_IMMUTABLE


@pytest.mark.parametrize("status", [S.CREATED, S.PENDING, S.PROCESSING])
@pytest.mark.parametrize("column", sorted(IMMUTABLE_VALUES))
def test_raw_sql_update_of_immutable_column_rejected_on_live_row(
    role_conn: Connection, conn: Connection, tenant_id: UUID, status: ExecutionStatus, column: str
) -> None:
    execution = execution_in(conn, tenant_id, status)
    statement = f"update billing.billing_executions set {column} = {IMMUTABLE_VALUES[column]}" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.IMMUTABLE_COLUMN


def test_raw_sql_change_of_recorded_provider_reference_rejected(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = submitted_execution(conn, tenant_id)
    statement = "update billing.billing_executions set provider_reference = 'ref-2'" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.IMMUTABLE_COLUMN


@pytest.mark.parametrize(
    "assignment", ["submitted_at = null", "submitted_at = submitted_at + interval '1 second'"], ids=["unset", "moved"]
)
def test_submitted_at_is_set_once_and_never_changes(
    role_conn: Connection, conn: Connection, tenant_id: UUID, assignment: str
) -> None:
    execution = submitted_execution(conn, tenant_id)
    statement = f"update billing.billing_executions set {assignment}" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.LIFECYCLE_RULE


def test_attempt_count_never_shrinks(role_conn: Connection, conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.PROCESSING)
    assert execution.attempt_count == 1
    statement = "update billing.billing_executions set attempt_count = 0" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.LIFECYCLE_RULE


def test_completion_without_provider_reference_rejected(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.PROCESSING)
    statement = "update billing.billing_executions set status = 'completed', finished_at = now()" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.LIFECYCLE_RULE


def test_submitted_execution_never_goes_back_to_processing(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = submitted_execution(conn, tenant_id)
    statement = "update billing.billing_executions set status = 'processing'" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == GuardState.TRANSITION_NOT_ALLOWED


@pytest.mark.parametrize(
    ("status", "assignment"),
    [(S.PENDING, "finished_at = now()"), (S.CREATED, "status = 'canceled', finished_at = null")],
    ids=["live-with-finish", "terminal-without-finish"],
)
def test_finished_at_exists_exactly_when_terminal(
    role_conn: Connection, conn: Connection, tenant_id: UUID, status: ExecutionStatus, assignment: str
) -> None:
    execution = execution_in(conn, tenant_id, status)
    statement = f"update billing.billing_executions set {assignment}" + WHERE
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == "23514"  # check_violation


def test_raw_sql_delete_of_execution_rejected(role_conn: Connection, conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.CREATED)
    statement = "delete from billing.billing_executions" + WHERE
    # No run-time role holds DELETE; the trigger (BE004) stands behind the grant for the owner.
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == "42501"


def test_owner_delete_of_execution_rejected_by_trigger(admin: Connection, conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.CREATED)
    with pytest.raises(psycopg.Error) as caught, admin.transaction():
        admin.execute("set local role billing_owner")
        admin.execute("delete from billing.billing_executions" + WHERE, _ids(execution))
    assert caught.value.sqlstate == GuardState.EXECUTION_NOT_DELETABLE


_BORN_WRONG = {
    "status": "'completed'",
    "provider_reference": "'ref_born'",
    "submitted_at": "now()",
    "finished_at": "now()",
    "attempt_count": "1",
    "last_error_code": "'card_declined'",
    "next_attempt_at": "now()",
}


@pytest.mark.parametrize("column", sorted(_BORN_WRONG))
def test_insert_guard_execution_is_born_created_unsubmitted_unattempted(
    conn: Connection, tenant_id: UUID, column: str
) -> None:
    # Only billing_app inserts executions (the worker has no INSERT at all).
    columns = {
        "tenant_id": "%(tenant)s",
        "id": "%(id)s",
        "entity_contract_id": "'c'",
        "plan_contract_id": "'p'",
        "amount": "100",
        "currency": "'EUR'",
        "payment_rail": "'card'",
        "payment_provider": "'sandbox'",
        "request_fingerprint": "repeat('0', 64)",
        column: _BORN_WRONG[column],
    }
    statement = f"insert into billing.billing_executions ({', '.join(columns)}) values ({', '.join(columns.values())})"
    assert refusal(conn, tenant_id, statement, {"tenant": tenant_id, "id": uuid4()}) == GuardState.NOT_BORN_CREATED


def test_worker_cannot_insert_executions(worker_db_url: str, tenant_id: UUID) -> None:
    with connect(worker_db_url) as worker:
        statement = (
            "insert into billing.billing_executions (tenant_id, id, entity_contract_id, plan_contract_id, amount,"
            " currency, payment_rail, payment_provider, request_fingerprint)"
            " values (%(tenant)s, %(id)s, 'c', 'p', 100, 'EUR', 'card', 'sandbox', repeat('0', 64))"
        )
        assert refusal(worker, tenant_id, statement, {"tenant": tenant_id, "id": uuid4()}) == "42501"


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    [
        ("amount", 0, "billing_executions_amount_positive"),
        ("amount", -5, "billing_executions_amount_positive"),
        ("currency", "eur", "billing_executions_currency_iso4217"),
        ("payment_rail", "wire", "billing_executions_payment_rail_known"),
    ],
)
def test_raw_sql_insert_with_invalid_value_rejected_by_named_constraint(
    conn: Connection, tenant_id: UUID, column: str, value: object, constraint: str
) -> None:
    row: dict[str, object] = {
        "tenant_id": tenant_id,
        "id": uuid4(),
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
        run(conn, tenant_id, f"insert into billing.billing_executions ({columns}) values ({placeholders})", row)
    assert caught.value.diag.constraint_name == constraint


def test_pending_settlement_without_provider_reference_rejected(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.PROCESSING)
    statement = "update billing.billing_executions set status = 'pending', submitted_at = now()" + WHERE
    expected = GuardState.LIFECYCLE_RULE  # the trigger speaks before the CHECK constraint behind it
    assert refusal(role_conn, tenant_id, statement, _ids(execution)) == expected


def test_role_conn_runs_as_each_runtime_role(role_conn: Connection) -> None:
    assert role_of(role_conn) in (DatabaseRole.APP, DatabaseRole.WORKER)


def test_event_type_tables_in_sql_equal_the_python_transitions(conn: Connection) -> None:
    kinds = {r["type"]: r["kind"] for r in conn.execute("select type, kind from billing.execution_event_types")}
    rows = conn.execute("select type, from_status, to_status from billing.execution_event_transitions").fetchall()
    in_sql = {(r["type"], r["from_status"], r["to_status"]) for r in rows}
    expected: set[tuple[str, str | None, str]] = {(CREATED_EVENT_TYPE, None, S.CREATED.value)}
    expected |= {(spec.event_type, a.value, b.value) for spec in TRANSITIONS.values() for a in spec.from_statuses
                 for b in spec.to_statuses}  # fmt: skip
    expected |= {
        (t, S.PROCESSING.value, S.PROCESSING.value) for t in (RETRY_SCHEDULED_EVENT_TYPE, RETRY_ATTEMPT_EVENT_TYPE)
    }
    expected |= {(t, S.COMPLETED.value, S.COMPLETED.value) for t in REVERSAL_EVENT_TYPES}
    assert in_sql == expected
    annotations = {
        DEAD_LETTERED_EVENT_TYPE,
        REDRIVEN_EVENT_TYPE,
        AMOUNT_MISMATCH_EVENT_TYPE,
        PAID_AFTER_FAILURE_EVENT_TYPE,
        RISK_ASSESSED_EVENT_TYPE,
        REVIEW_APPROVED_EVENT_TYPE,
        AUTHENTICATION_REQUIRED_EVENT_TYPE,
        AUTHENTICATED_EVENT_TYPE,
    }
    assert kinds == {
        **{t: "change" for t, _, _ in expected if t not in REVERSAL_EVENT_TYPES},
        **dict.fromkeys(REVERSAL_EVENT_TYPES, "reversal"),
        **dict.fromkeys(annotations, "annotation"),
    }


# An annotation event with its outbox row (so only the status it names can be wrong), as raw SQL.
_ANNOTATION = (
    "with event as (insert into billing.billing_execution_events"
    " (tenant_id, id, execution_id, type, old_status, new_status)"
    " values (%(tenant)s, gen_random_uuid(), %(id)s, %(type)s, %(old)s, %(new)s) returning *)"
    " insert into billing.billing_outbox (tenant_id, event_id, aggregate_id, event_type, payload)"
    " select x.tenant_id, event.id, x.id, event.type,"
    " billing.execution_event_payload(x, event.id, event.type, event.old_status, null, now())"
    " || jsonb_build_object('new_status', event.new_status)"
    " from event join billing.billing_executions x on x.tenant_id = event.tenant_id and x.id = event.execution_id"
)


def test_an_annotation_must_name_a_status_the_execution_holds_or_held_in_its_transaction(
    role_conn: Connection, conn: Connection, tenant_id: UUID
) -> None:
    # Moved on to processing in an earlier transaction: a risk decision "in pending" now is a false record.
    processing = execution_in(conn, tenant_id, S.PROCESSING)
    said_pending = {**_ids(processing), "type": RISK_ASSESSED_EVENT_TYPE, "old": "pending", "new": "pending"}
    assert refusal(role_conn, tenant_id, _ANNOTATION, said_pending) == GuardState.UNRECORDED_CHANGE
    # A status it never held at all, and an annotation that claims a change, are refused too.
    pending = {**_ids(execution_in(conn, tenant_id, S.PENDING)), "type": RISK_ASSESSED_EVENT_TYPE}
    never = {**pending, "old": "completed", "new": "completed"}
    assert refusal(role_conn, tenant_id, _ANNOTATION, never) == GuardState.UNRECORDED_CHANGE
    a_change = {**pending, "old": "pending", "new": "processing"}
    assert refusal(role_conn, tenant_id, _ANNOTATION, a_change) == GuardState.UNRECORDED_CHANGE
    # The status it holds is accepted: the refusals above are the status's, not the statement's.
    run(role_conn, tenant_id, _ANNOTATION, {**pending, "old": "pending", "new": "pending"})


def test_an_annotation_in_pending_commits_with_the_claim_that_moves_the_execution_on(
    role_conn: Connection, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    pending = execution_in(conn, tenant_id, S.PENDING)
    with pipelined_tenant_transaction(role_conn, tenant_id):
        context = WorkflowWriteContext.service_default()
        queue_annotation(
            role_conn, tenant_id, pending.id, RISK_ASSESSED_EVENT_TYPE, {}, context=context, correlation_id=None
        )
        claim = ExecutionRepository(role_conn).queue_mark_processing(
            tenant_id, pending.id, context, correlation_id=None
        )
    assert claim.result().status is S.PROCESSING
    rows = admin.execute(
        "select type, old_status, new_status, recorded_txid::text as txid from billing.billing_execution_events"
        " where tenant_id = %s and execution_id = %s",
        [tenant_id, pending.id],
    ).fetchall()
    claim_txid = next(r["txid"] for r in rows if r["new_status"] == "processing")
    last_two = [(r["type"], r["old_status"], r["new_status"]) for r in rows if r["txid"] == claim_txid]
    assert sorted(last_two) == sorted(
        [
            (RISK_ASSESSED_EVENT_TYPE, "pending", "pending"),
            (TRANSITIONS[TransitionMethod.MARK_PROCESSING].event_type, "pending", "processing"),
        ]
    )
