"""record_audit_event, the contract every caller relies on: one row per event, written by the recording roles,
committed (or rolled back) with the caller's transaction, never readable or changeable by them."""

from __future__ import annotations

from collections.abc import Iterator
from hashlib import sha256
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from billing.audit import AuditEvent, AuditEventType, AuditOutcome, record_audit_event
from billing.audit.leaf import canonical_leaf
from billing.db.connection import Connection, connect
from billing.db.roles import LOGIN_USERS, DatabaseRole, login_url
from billing.db.sqlstates import GuardState
from billing.db.tenancy import tenant_transaction

RECORDERS = (DatabaseRole.APP, DatabaseRole.WORKER, DatabaseRole.VAULT, DatabaseRole.AUDITOR)
DENIED = "42501"


@pytest.fixture(params=RECORDERS, ids=[role.value for role in RECORDERS])
def recorder(request: pytest.FixtureRequest, admin_db_url: str) -> Iterator[tuple[DatabaseRole, Connection]]:
    with connect(login_url(admin_db_url, request.param)) as connection:
        yield request.param, connection


def _event(resource_id: str, **overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "event_type": AuditEventType.INSTRUMENT_READ,
        "outcome": AuditOutcome.GRANTED,
        "actor": "user-42",
        "tenant_id": uuid4(),
        "resource_type": "payment_instrument",
        "resource_id": resource_id,
        "purpose": "display",
        "correlation_id": f"corr-{uuid4()}",
        "source": "203.0.113.7",
        "details": {"route": "GET /payment-instruments/{id}"},
    }
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


def _rows(admin: Connection, resource_id: str) -> list[dict[str, Any]]:
    return admin.execute(
        "select * from billing_audit.entries where resource_id = %s order by id", [resource_id]
    ).fetchall()


def test_record_writes_one_row_as_each_recording_role_with_the_database_time_and_login(
    recorder: tuple[DatabaseRole, Connection], admin: Connection
) -> None:
    role, conn = recorder
    resource = f"pi_{uuid4().hex}"
    event = _event(resource)
    before = admin.execute("select clock_timestamp() as now").fetchone()
    record_audit_event(conn, event)
    rows = _rows(admin, resource)
    assert len(rows) == 1
    row = rows[0]
    assert before is not None
    assert row["occurred_at"] >= before["now"]
    assert (row["event_type"], row["outcome"], row["actor"], row["tenant_id"]) == (
        "chd.instrument_read",
        "granted",
        "user-42",
        event.tenant_id,
    )
    assert (row["purpose"], row["correlation_id"], row["source"], row["details"]) == (
        "display",
        event.correlation_id,
        "203.0.113.7",
        {"route": "GET /payment-instruments/{id}"},
    )
    assert row["database_user"] == LOGIN_USERS[role].name
    assert bytes(row["leaf"]) == canonical_leaf(row)
    assert bytes(row["leaf_hash"]) == sha256(b"\x00" + bytes(row["leaf"])).digest()


def test_record_inside_the_callers_transaction_rolls_back_with_it(conn: Connection, admin: Connection) -> None:
    resource = f"pi_{uuid4().hex}"
    with pytest.raises(RuntimeError), conn.transaction():
        record_audit_event(conn, _event(resource))
        raise RuntimeError("the access failed")
    assert _rows(admin, resource) == []
    with tenant_transaction(conn, uuid4()):
        record_audit_event(conn, _event(resource))
    assert len(_rows(admin, resource)) == 1


def test_sql_and_python_leaves_agree_on_awkward_text(conn: Connection, admin: Connection) -> None:
    resource = f"pi_{uuid4().hex}"
    awkward = 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f é 漢字 \u2028 😀 </script>'
    record_audit_event(
        conn,
        _event(
            resource,
            actor=awkward,
            tenant_id=None,
            purpose=None,
            correlation_id=None,
            source=None,
            details={"z": awkward, "a": "1", "é": "x", "B": "", "\u00e9\u0301": "combining"},
        ),
    )
    (row,) = _rows(admin, resource)
    assert bytes(row["leaf"]) == canonical_leaf(row)
    assert b'"tenant_id":null' in bytes(row["leaf"])


def test_writers_cannot_choose_the_id_time_or_leaf(conn: Connection, admin: Connection) -> None:
    resource = f"pi_{uuid4().hex}"
    with conn.transaction():
        conn.execute(
            "insert into billing_audit.entries (id, occurred_at, event_type, outcome, actor, resource_type,"
            " resource_id, database_user, leaf, leaf_hash) values (1, '2001-01-01', 'chd.instrument_read',"
            " 'granted', 'me', 'payment_instrument', %s, 'someone_else', 'forged', %s)",
            [resource, b"\x00" * 32],
        )
    (row,) = _rows(admin, resource)
    assert row["id"] != 1
    assert row["occurred_at"].year >= 2026
    assert row["database_user"] == LOGIN_USERS[DatabaseRole.APP].name
    assert bytes(row["leaf"]) == canonical_leaf(row)


@pytest.mark.parametrize(
    "statement",
    [
        "select * from billing_audit.entries",
        "update billing_audit.entries set actor = 'x'",
        "delete from billing_audit.entries",
        "truncate billing_audit.entries",
        "insert into billing_audit.leaves (seq, entry_id, leaf_hash) values (0, 1, '\\x00')",
        "select nextval('billing_audit.entry_ids')",
    ],
)
@pytest.mark.parametrize("role", [DatabaseRole.APP, DatabaseRole.WORKER, DatabaseRole.VAULT])
def test_recording_roles_cannot_read_change_or_sequence_the_trail(
    admin_db_url: str, role: DatabaseRole, statement: str
) -> None:
    with connect(login_url(admin_db_url, role)) as conn, pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(statement)
    assert caught.value.sqlstate == DENIED


@pytest.mark.parametrize(
    "statement",
    [
        "update billing_audit.entries set actor = 'x'",
        "delete from billing_audit.entries",
        "truncate billing_audit.entries",
    ],
)
def test_the_auditor_reads_but_cannot_change_the_trail(admin_db_url: str, statement: str) -> None:
    with connect(login_url(admin_db_url, DatabaseRole.AUDITOR)) as auditor:
        with auditor.transaction():
            assert auditor.execute("select count(*) as n from billing_audit.entries").fetchone() is not None
        with pytest.raises(psycopg.Error) as caught, auditor.transaction():
            auditor.execute(statement)
    assert caught.value.sqlstate == DENIED


@pytest.mark.parametrize(
    "statement",
    [
        "update billing_audit.entries set actor = 'x' where id = (select max(id) from billing_audit.entries)",
        "delete from billing_audit.entries where id = (select max(id) from billing_audit.entries)",
        "truncate billing_audit.entries cascade",
        "truncate billing_audit.leaves",
        # Row triggers fire only on rows: the tables the sequencer fills may be empty here, so truncate them.
        "truncate billing_audit.checkpoints",
        "truncate billing_audit.sequencer_runs",
    ],
)
def test_even_the_owner_cannot_change_the_trail_while_its_triggers_stand(
    conn: Connection, admin: Connection, statement: str
) -> None:
    record_audit_event(conn, _event(f"pi_{uuid4().hex}"))
    with pytest.raises(psycopg.Error) as caught, admin.transaction():
        admin.execute("set local role billing_owner")
        admin.execute(statement)
    assert caught.value.sqlstate == GuardState.APPEND_ONLY


def test_details_must_be_small_strings(conn: Connection) -> None:
    with pytest.raises(ValueError, match="details"):
        _event("x", details={"n": 1})
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute(
            "insert into billing_audit.entries (event_type, outcome, actor, resource_type, details)"
            " values ('chd.instrument_read', 'granted', 'me', 'payment_instrument', '{\"n\": 1}')"
        )
