"""Events and workflow rows are append-only; the outbox only changes its publication bookkeeping."""

from __future__ import annotations

from uuid import UUID

import psycopg
import pytest

from billing.db.connection import Connection
from tests.factories import create_execution

APPEND_ONLY = ["billing_execution_events", "contract_term_datetimes"]


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_raw_sql_update_of_append_only_row_rejected(conn: Connection, tenant_id: UUID, table: str) -> None:
    create_execution(conn, tenant_id)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(f"update billing.{table} set correlation_id = 'rewritten' where tenant_id = %s", [tenant_id])
    assert caught.value.sqlstate == "BE005"


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_raw_sql_delete_of_append_only_row_rejected(conn: Connection, tenant_id: UUID, table: str) -> None:
    create_execution(conn, tenant_id)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(f"delete from billing.{table} where tenant_id = %s", [tenant_id])
    assert caught.value.sqlstate == "BE005"


@pytest.mark.parametrize("table", [*APPEND_ONLY, "billing_executions"])
def test_truncate_of_history_table_rejected(conn: Connection, table: str) -> None:
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(f"truncate billing.{table} cascade")
    assert caught.value.sqlstate in {"BE004", "BE005"}


def test_outbox_payload_rewrite_rejected_but_publication_bookkeeping_allowed(conn: Connection, tenant_id: UUID) -> None:
    create_execution(conn, tenant_id)
    conn.execute(
        "update billing.billing_outbox set publish_attempts = publish_attempts + 1, last_error = 'throttled'"
        " where tenant_id = %s",
        [tenant_id],
    )
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("update billing.billing_outbox set payload = '{}' where tenant_id = %s", [tenant_id])
    assert caught.value.sqlstate == "BE005"


def test_outbox_delete_allowed_only_after_publication(conn: Connection, tenant_id: UUID) -> None:
    create_execution(conn, tenant_id)
    with pytest.raises(psycopg.Error):
        conn.execute("delete from billing.billing_outbox where tenant_id = %s", [tenant_id])
    conn.execute("update billing.billing_outbox set published_at = now() where tenant_id = %s", [tenant_id])
    deleted = conn.execute("delete from billing.billing_outbox where tenant_id = %s", [tenant_id]).rowcount
    assert deleted == 1
