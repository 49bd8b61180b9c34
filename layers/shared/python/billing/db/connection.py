"""Connections: autocommit sessions with explicit transactions, timeouts set at connect time."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

Connection = psycopg.Connection[DictRow]

# Bounded waits: a stuck lock or runaway query must fail fast instead of holding a Lambda until its timeout.
DEFAULT_STATEMENT_TIMEOUT_MS = 5_000
DEFAULT_LOCK_TIMEOUT_MS = 2_000
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000


def session_options(
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
) -> str:
    """libpq `options` string carrying the session timeouts."""
    return (
        f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_timeout_ms} "
        f"-c idle_in_transaction_session_timeout={DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    )


def connect(url: str, *, application_name: str = "billing", **overrides: Any) -> Connection:
    """Open an autocommit connection; every unit of work runs inside `with conn.transaction():`.

    No session state: behind RDS Proxy it would pin the connection. Timeouts are set per transaction by
    billing.db.tenancy; long-running tools (migrations) pass their own `options`. Statements are never prepared
    on the server (prepare_threshold=None), for the same reason.
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "application_name": application_name,
        "connect_timeout": 5,
        # psycopg prepares a statement server-side once it has run prepare_threshold (5) times on a connection. A
        # prepared statement is session state, so RDS Proxy pins the client to one database connection for the
        # rest of the session, which defeats its multiplexing: every warm Lambda would hold a database connection
        # of its own ("Avoiding pinning an RDS Proxy", PostgreSQL conditions:
        # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-pinning.html#rds-proxy-pinning.postgres).
        # Every run-time connection goes through the proxy, so none prepares; parsing and planning each statement
        # again costs far less than a pinned connection.
        "prepare_threshold": None,
    }
    kwargs.update(overrides)
    return psycopg.connect(url, **kwargs)
