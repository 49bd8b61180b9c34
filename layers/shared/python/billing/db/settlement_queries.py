"""SQL of the settlement report: the executions a period's settlement files are checked against, across tenants.

Both reads run inside billing.db.tenancy.system_transaction (a provider's file spans our tenants) and only read:
nothing here locks or writes. Each row carries `reversed`, whether a refund or chargeback is recorded for it in
billing.execution_reversals, because the execution row itself stays completed when money goes back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any, Final

from billing.db.connection import Connection

# A report reads a day's or a week's executions, not one row: more than the 5 s every transaction gets by default
# (billing.db.tenancy), far less than the function's 10 minutes. Transaction-local, like the default it replaces.
REPORT_STATEMENT_TIMEOUT_MS: Final = 120_000
# References per lookup: one statement stays small, however long a provider's file is.
REFERENCE_BATCH: Final = 1_000

_REVERSED: Final = """
exists (select 1 from billing.execution_reversals r where r.tenant_id = e.tenant_id and r.execution_id = e.id)
"""
# The amounts of the execution's reversals that have not failed, by what a settlement file lists them as: a line of a
# refund or a chargeback matches one of these, by amount (a partial refund is a line of its own amount).
_REVERSAL_AMOUNTS: Final = """
array(select r.amount from billing.execution_reversals r
       where r.tenant_id = e.tenant_id and r.execution_id = e.id and r.status <> 'failed' and r.amount is not null
         and r.kind in ({kinds}) order by r.recorded_at, r.id)
"""
_AMOUNTS: Final = (
    _REVERSAL_AMOUNTS.format(kinds="'refund', 'cancel_or_refund'") + " as refund_amounts, "
    + _REVERSAL_AMOUNTS.format(kinds="'chargeback', 'second_chargeback'") + " as chargeback_amounts"
)  # fmt: skip

# Everything submitted to a provider (it has a reference) that was submitted or finished in [start, end): what we
# expect the period's files to list, and what our side of the totals is made of.
_IN_PERIOD: Final = f"""
select e.*, {_REVERSED} as reversed, {_AMOUNTS}
  from billing.billing_executions e
 where e.provider_reference is not null
   and ((e.submitted_at >= %(start)s and e.submitted_at < %(end)s)
        or (e.finished_at >= %(start)s and e.finished_at < %(end)s))
 order by e.payment_provider, e.provider_reference, e.tenant_id, e.id
"""

# The executions a file's lines name, whenever they happened (a chargeback can come months after its payment).
# Served by billing_executions_provider_reference_lookup (payment_provider, provider_reference).
_BY_REFERENCE: Final = f"""
select e.*, {_REVERSED} as reversed, {_AMOUNTS}
  from billing.billing_executions e
 where e.payment_provider = %(provider)s
   and e.provider_reference = any(%(references)s)
 order by e.provider_reference, e.tenant_id, e.id
"""

_STATEMENT_TIMEOUT: Final = "select set_config('statement_timeout', %s, true)"


def extend_statement_timeout(conn: Connection, milliseconds: int = REPORT_STATEMENT_TIMEOUT_MS) -> None:
    """Raise the open transaction's statement timeout for the report's scans (transaction-local)."""
    conn.execute(_STATEMENT_TIMEOUT, [str(milliseconds)])


def executions_in_period(conn: Connection, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Executions with a provider reference, submitted or finished in [start, end), with `reversed`."""
    return conn.execute(_IN_PERIOD, {"start": start, "end": end}).fetchall()


def executions_by_reference(conn: Connection, provider: str, references: Collection[str]) -> list[dict[str, Any]]:
    """Executions of `provider` carrying any of `references`, with `reversed`; several per reference if ambiguous."""
    rows: list[dict[str, Any]] = []
    for batch in _batches(sorted(set(references)), REFERENCE_BATCH):
        rows.extend(conn.execute(_BY_REFERENCE, {"provider": provider, "references": batch}).fetchall())
    return rows


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
