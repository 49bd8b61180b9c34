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

    No session settings: behind RDS Proxy they would pin the connection. Timeouts are set per transaction by
    billing.db.tenancy; long-running tools (migrations) pass their own `options`.
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "application_name": application_name,
        "connect_timeout": 5,
    }
    kwargs.update(overrides)
    return psycopg.connect(url, **kwargs)
