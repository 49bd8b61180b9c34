"""Keeping the live outbox small: published rows older than a day move to billing.billing_outbox_archive.

The outbox is the relay's work queue. Once a row is published nothing reads it from there again except an
operator's replay, yet it would stay forever, weighing on every insert, vacuum and backup of the table the request
path writes four times per charge. billing.archive_published_outbox (sql/20261220_billing_outbox_archive.sql) moves
published rows, oldest first, to the append-only archive in one statement per call: the rows leave the live table
and arrive in the archive together, unchanged, stamped with when and by whom. Replay reads both tables.

The relay runs it at the end of each run that drained the outbox (publishing comes first), a bounded number of
rows per call and as long as its time budget lasts, so in steady state each one-minute run moves the minute of rows
that crossed the retention. A day of published rows stays in the live table: what an operator looks at there
during an incident, and long past any relay lease, so nothing still working on a row can find it gone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Final

from billing.db.connection import Connection
from billing.db.tenancy import system_transaction

DEFAULT_ARCHIVE_AFTER: Final = timedelta(days=1)
# Rows a call moves (the function allows up to 10,000): a call's locks, WAL and time stay small, and one that meets
# cold pages (rows the table's history scattered) still ends within its timeout.
MAX_ROWS_PER_CALL: Final = 5_000
# A call's statement timeout: the run's remaining time, within these bounds. Not the 5 s a request gets (a call
# may read thousands of pages), never past the run's own end.
MIN_CALL_TIMEOUT_MS: Final = 1_000
MAX_CALL_TIMEOUT_MS: Final = 30_000

_TIMEOUT: Final = "select set_config('statement_timeout', %s, true)"
_ARCHIVE: Final = "select billing.archive_published_outbox(%(older_than)s, %(max_rows)s) as moved"

# Milliseconds the caller has left (the relay's TimeBudget).
TimeLeft = Callable[[], float]


def archive_published(
    conn: Connection,
    *,
    older_than: timedelta = DEFAULT_ARCHIVE_AFTER,
    max_rows: int = MAX_ROWS_PER_CALL,
    timeout_ms: float = MAX_CALL_TIMEOUT_MS,
) -> int:
    """Move up to `max_rows` rows published more than `older_than` ago to the archive (one transaction); how many."""
    # The function is the owner's and sees every tenant; the system scope is the worker's ordinary one for it.
    with system_transaction(conn):
        conn.execute(_TIMEOUT, [str(int(min(MAX_CALL_TIMEOUT_MS, max(MIN_CALL_TIMEOUT_MS, timeout_ms))))])
        row = conn.execute(_ARCHIVE, {"older_than": older_than, "max_rows": max_rows}).fetchone()
    assert row is not None, "a function call returns one row"
    return int(row["moved"])


def archive_while(
    conn: Connection,
    time_left: TimeLeft,
    *,
    older_than: timedelta = DEFAULT_ARCHIVE_AFTER,
    max_rows: int = MAX_ROWS_PER_CALL,
) -> int:
    """Archive call after call while time is left and a call still fills up; the rows moved in all."""
    moved = 0
    while (left := time_left()) > 0:
        batch = archive_published(conn, older_than=older_than, max_rows=max_rows, timeout_ms=left)
        moved += batch
        if batch < max_rows:
            break
    return moved
