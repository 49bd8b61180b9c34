"""Per-transaction tenant scope for row-level security, the second wall behind every query's own tenant filter.

Every tenant table has a policy admitting only rows of the tenant named by the transaction-local setting
`billing.tenant_id`; a transaction that sets nothing sees nothing. Workers that legitimately span tenants
(outbox relay, reconciliation, webhook lookup by provider reference) open a system scope instead.

The settings are transaction-local (set_config(..., true)) on purpose: behind RDS Proxy a session setting would
outlive the transaction and leak to whichever client reuses the server connection next.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from psycopg import pq

from billing.db.connection import DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_STATEMENT_TIMEOUT_MS, Connection

# Timeouts travel with the scope, also transaction-local: a stuck lock or runaway query fails fast instead of
# holding a Lambda until its own timeout, without session state (which RDS Proxy would pin or leak).
_TIMEOUTS = (
    f"set_config('statement_timeout', '{DEFAULT_STATEMENT_TIMEOUT_MS}', true), "
    f"set_config('lock_timeout', '{DEFAULT_LOCK_TIMEOUT_MS}', true)"
)
_SET_TENANT = (
    f"select set_config('billing.tenant_id', %s, true), set_config('billing.scope', 'tenant', true), {_TIMEOUTS}"
)
_SET_SYSTEM = (
    f"select set_config('billing.tenant_id', '', true), set_config('billing.scope', 'system', true), {_TIMEOUTS}"
)


@contextmanager
def tenant_transaction(conn: Connection, tenant_id: UUID) -> Iterator[Connection]:
    """A transaction (or savepoint, if one is open) that sees and writes only `tenant_id`'s rows."""
    with conn.transaction():
        conn.execute(_SET_TENANT, [str(tenant_id)])
        yield conn


@contextmanager
def system_transaction(conn: Connection) -> Iterator[Connection]:
    """A transaction that spans tenants, for workers that find their work by something other than tenant."""
    with conn.transaction():
        conn.execute(_SET_SYSTEM)
        yield conn


def run_in_tenant_scope(
    conn: Connection, tenant_id: UUID, sql: str, params: Sequence[Any] | Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One statement in its own tenant-scoped transaction, in one round trip; its rows (none if it returns none).

    The hot path of the repository: BEGIN, the scope, the statement and COMMIT are written as one pipeline
    (psycopg's transaction block would add client-side bookkeeping and a sync per transition). Inside a caller's
    transaction it becomes a savepoint instead, so callers can still compose units of work.
    """
    if conn.info.transaction_status is not pq.TransactionStatus.IDLE:
        with tenant_transaction(conn, tenant_id):
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(_SET_TENANT, [str(tenant_id)])
            cursor = conn.execute(sql, params)
            conn.execute("COMMIT")
    except BaseException:
        # The statement failed (the server skipped COMMIT) or the pipeline never synced: end the transaction.
        if conn.info.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            conn.execute("ROLLBACK")
        raise
    return cursor.fetchall() if cursor.description else []
