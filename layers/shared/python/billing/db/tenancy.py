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

from billing.db.connection import (
    DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    DEFAULT_LOCK_TIMEOUT_MS,
    DEFAULT_STATEMENT_TIMEOUT_MS,
    Connection,
)

# Timeouts travel with the scope, also transaction-local: a stuck lock or runaway query fails fast instead of
# holding a Lambda until its own timeout, and a transaction left idle (a worker stuck between statements while
# holding row locks) is ended by the server, all without session state (which RDS Proxy would pin or leak).
_TIMEOUTS = (
    f"set_config('statement_timeout', '{DEFAULT_STATEMENT_TIMEOUT_MS}', true), "
    f"set_config('lock_timeout', '{DEFAULT_LOCK_TIMEOUT_MS}', true), "
    f"set_config('idle_in_transaction_session_timeout', '{DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS}', true)"
)
_SET_TIMEOUTS = f"select {_TIMEOUTS}"
_CURRENT_SCOPE = (
    "select current_setting('billing.tenant_id', true) as tenant_id, current_setting('billing.scope', true) as scope"
)
_RESTORE_SCOPE = "select set_config('billing.tenant_id', %s, true), set_config('billing.scope', %s, true)"
_SET_TENANT = (
    f"select set_config('billing.tenant_id', %s, true), set_config('billing.scope', 'tenant', true), {_TIMEOUTS}"
)
_IDLE = pq.TransactionStatus.IDLE
_SET_SYSTEM = (
    f"select set_config('billing.tenant_id', '', true), set_config('billing.scope', 'system', true), {_TIMEOUTS}"
)


_FLUSH_LATER = "select set_config('synchronous_commit', 'off', true)"


def commit_without_flush_wait(conn: Connection) -> None:
    """Let the open transaction's COMMIT return before its WAL reaches disk (sent, not waited for, in a pipeline).

    Only for a transaction that nothing outside the database acts on before a later transaction of the same flow
    commits normally: WAL is flushed in order, so that later commit makes this one durable too, and a crash in
    between loses a unit of work nobody was told about (the flow starts it again). The pre-submission steps qualify:
    a charge reaches a provider only after the claim that follows them.
    """
    conn.execute(_FLUSH_LATER)


def apply_timeouts(conn: Connection) -> None:
    """Bound the open transaction's waits without choosing a scope (under row-level security it sees nothing)."""
    conn.execute(_SET_TIMEOUTS)


@contextmanager
def tenant_transaction(conn: Connection, tenant_id: UUID) -> Iterator[Connection]:
    """A transaction (or savepoint, if one is open) that sees and writes only `tenant_id`'s rows."""
    with _scoped(conn, _SET_TENANT, [str(tenant_id)]):
        yield conn


@contextmanager
def system_transaction(conn: Connection) -> Iterator[Connection]:
    """A transaction that spans tenants, for workers that find their work by something other than tenant."""
    with _scoped(conn, _SET_SYSTEM, []):
        yield conn


@contextmanager
def _scoped(conn: Connection, set_scope: str, params: list[str]) -> Iterator[None]:
    # Transaction-local settings made in a savepoint outlive its release, so a nested scope (a worker's
    # per-tenant write inside its system-scoped batch) puts the enclosing scope back when it ends.
    outer = conn.execute(_CURRENT_SCOPE).fetchone() if conn.info.transaction_status is not _IDLE else None
    with conn.transaction():
        conn.execute(set_scope, params)
        yield
        if outer is not None:
            conn.execute(_RESTORE_SCOPE, [outer["tenant_id"] or "", outer["scope"] or ""])


@contextmanager
def pipelined_tenant_transaction(conn: Connection, tenant_id: UUID) -> Iterator[Connection]:
    """tenant_transaction in pipeline mode, with BEGIN and COMMIT sent as statements.

    psycopg's own transaction block syncs with the server on entry and on exit; sent as statements, BEGIN and the
    scope travel with the first statements and COMMIT with the last, so a unit of work costs one round trip per
    point where the caller reads an answer (a fetch), plus one. Inside a caller's transaction it is a savepoint, as
    tenant_transaction is.
    """
    if conn.info.transaction_status is not _IDLE:
        with conn.pipeline(), tenant_transaction(conn, tenant_id):
            yield conn
        return
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(_SET_TENANT, [str(tenant_id)])
            yield conn
            conn.execute("COMMIT")
    except BaseException:
        # A statement failed (the server skipped the rest, COMMIT included) or the pipeline never synced.
        if conn.info.transaction_status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            conn.execute("ROLLBACK")
        raise


def run_in_tenant_scope(
    conn: Connection, tenant_id: UUID, sql: str, params: Sequence[Any] | Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One statement in its own tenant-scoped transaction, in one round trip; its rows (none if it returns none).

    The hot path of the repository: BEGIN, the scope, the statement and COMMIT are written as one pipeline
    (psycopg's transaction block would add client-side bookkeeping and a sync per transition). Inside a caller's
    transaction it becomes a savepoint instead, so callers can still compose units of work.
    """
    with pipelined_tenant_transaction(conn, tenant_id):
        cursor = conn.execute(sql, params)
    return cursor.fetchall() if cursor.description else []
