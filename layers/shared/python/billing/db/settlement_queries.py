"""SQL of the settlement report: our side of a provider's settlement files, across tenants, read a chunk at a time.

Every read runs in its own billing.db.tenancy.system_transaction (a provider's file spans our tenants) and only
reads: nothing here locks or writes. The engine calls between two reads of a file, so no transaction is ever open
while a file streams from S3. Each execution carries its reversals that have not failed (kind and amount, in the
order they were recorded), because the execution row itself stays completed when money goes back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from psycopg.rows import tuple_row

from billing.db.connection import Connection
from billing.db.planner import walk_in_index_order
from billing.db.tenancy import system_transaction
from billing.domain.reversals import ReversalKind
from billing.domain.status import ExecutionStatus
from billing.settlement.reconciliation.fee_bands import FeeBand
from billing.settlement.reconciliation.ours import OurExecution, RecordedReversal

# A report's lookups and scans read many rows: more than the 5 s every transaction gets by default
# (billing.db.tenancy), far less than the function's 10 minutes. Transaction-local, like the default it replaces.
REPORT_STATEMENT_TIMEOUT_MS: Final = 120_000
# Executions per page of the period scan (missing_from_file): a page and its Python objects stay in the MB.
COMPLETED_PAGE: Final = 20_000
# Rows are read as tuples in _COLUMNS order and in binary (a dict per row, and parsing uuids and timestamps from
# text, cost more than the OurExecution built from them; a report reads each execution up to twice: by reference,
# and in the period scan).
_TENANT, _ID, _PROVIDER, _REFERENCE, _AMOUNT, _CURRENCY, _STATUS, _SUBMITTED, _FINISHED, _KINDS, _AMOUNTS = range(11)
_STATUSES: Final = {status.value: status for status in ExecutionStatus}
_REVERSAL_KINDS: Final = {kind.value: kind for kind in ReversalKind}

_COLUMNS: Final = """
e.tenant_id, e.id, e.payment_provider, e.provider_reference, e.amount, e.currency, e.status, e.submitted_at,
e.finished_at
"""
# The reversals that have not failed, in recorded order: a refund or chargeback row is matched to one of them.
_WITH_REVERSALS: Final = f"""
select {_COLUMNS}, rv.kinds as reversal_kinds, rv.amounts as reversal_amounts
  from billing.billing_executions e
  left join lateral (
      select array_agg(r.kind order by r.recorded_at, r.id) as kinds,
             array_agg(r.amount order by r.recorded_at, r.id) as amounts
        from billing.execution_reversals r
       where r.tenant_id = e.tenant_id and r.execution_id = e.id and r.status <> 'failed'
  ) rv on true
"""
# Served by billing_executions_provider_reference_lookup (payment_provider, provider_reference).
_BY_REFERENCE: Final = (
    _WITH_REVERSALS + " where e.payment_provider = %(provider)s and e.provider_reference = any(%(references)s)"
)
# Served by billing_executions_id_lookup (sql/20261217_billing_settlement_fee_bands.sql): the id alone, since the
# provider echoes our execution id but not our tenant.
_BY_ID: Final = _WITH_REVERSALS + " where e.id = any(%(ids)s::uuid[]) and e.payment_provider = %(provider)s"

# What the provider owes a listing for: completed in [start, end), in (finished_at, tenant_id, id) pages. Served
# by billing_executions_finished_at_submitted (finished_at) where provider_reference is not null.
_COMPLETED_FIRST: Final = f"""
select {_COLUMNS} from billing.billing_executions e
 where e.payment_provider = %(provider)s and e.status = 'completed' and e.provider_reference is not null
   and e.finished_at >= %(start)s and e.finished_at < %(end)s
 order by e.finished_at, e.tenant_id, e.id
 limit %(limit)s
"""
_COMPLETED_NEXT: Final = f"""
select {_COLUMNS} from billing.billing_executions e
 where e.payment_provider = %(provider)s and e.status = 'completed' and e.provider_reference is not null
   and e.finished_at >= %(after_finished)s and e.finished_at < %(end)s
   and (e.finished_at, e.tenant_id, e.id) > (%(after_finished)s, %(after_tenant)s, %(after_id)s)
 order by e.finished_at, e.tenant_id, e.id
 limit %(limit)s
"""

# Providers we submitted to, or finished a charge at, in [start, end): each owes the period's files.
_PROVIDERS: Final = """
select payment_provider from billing.billing_executions
 where provider_reference is not null and submitted_at >= %(start)s and submitted_at < %(end)s
union
select payment_provider from billing.billing_executions
 where provider_reference is not null and finished_at >= %(start)s and finished_at < %(end)s
"""

_FEE_BANDS: Final = """
select tenant_id, provider, payment_method, currency, min_basis_points, max_basis_points, fixed_minor
  from billing.settlement_fee_bands
 where provider = %s
 order by tenant_id, payment_method, currency
"""

_STATEMENT_TIMEOUT: Final = "select set_config('statement_timeout', %s, true)"


def extend_statement_timeout(conn: Connection, milliseconds: int = REPORT_STATEMENT_TIMEOUT_MS) -> None:
    """Raise the open transaction's statement timeout for the report's scans (transaction-local)."""
    conn.execute(_STATEMENT_TIMEOUT, [str(milliseconds)])


def providers_in_period(conn: Connection, *, start: datetime, end: datetime) -> list[str]:
    """Payment providers of executions with a provider reference submitted or finished in [start, end)."""
    with system_transaction(conn):
        extend_statement_timeout(conn)
        rows = conn.execute(_PROVIDERS, {"start": start, "end": end}).fetchall()
    return sorted(row["payment_provider"] for row in rows)


class PostgresExecutionLookup:
    """The reconciliation engine's ExecutionLookup over one connection."""

    def __init__(self, conn: Connection, *, page: int = COMPLETED_PAGE) -> None:
        self._conn = conn
        self._page = page

    def find(self, provider: str, references: Collection[str], execution_ids: Collection[UUID]) -> list[OurExecution]:
        conn = self._conn
        with system_transaction(conn), conn.cursor(row_factory=tuple_row, binary=True) as cursor:
            extend_statement_timeout(conn)
            rows = (
                cursor.execute(_BY_REFERENCE, {"provider": provider, "references": list(references)}).fetchall()
                if references
                else []
            )
            # The id fallback only for ids no reference found: usually none, so one statement per chunk.
            unresolved = set(execution_ids) - {row[_ID] for row in rows} if execution_ids else set()
            if unresolved:
                rows.extend(cursor.execute(_BY_ID, {"provider": provider, "ids": list(unresolved)}).fetchall())
        return [_execution(row) for row in rows]

    def completed(self, provider: str, start: datetime, end: datetime) -> Iterator[list[OurExecution]]:
        params: dict[str, Any] = {"provider": provider, "start": start, "end": end, "limit": self._page}
        statement = _COMPLETED_FIRST
        while True:
            with system_transaction(self._conn), self._conn.cursor(row_factory=tuple_row, binary=True) as cursor:
                extend_statement_timeout(self._conn)
                # billing.db.planner: the same misjudged selectivity as the claims'; the period index is in the
                # page's order (finished_at, tenant_id, id), so a page walks it, reads one page and stops.
                walk_in_index_order(self._conn, forbid_sort=True)
                rows = cursor.execute(statement, params).fetchall()
            if not rows:
                return
            yield [_execution(row) for row in rows]
            if len(rows) < self._page:
                return
            last = rows[-1]
            params |= {"after_finished": last[_FINISHED], "after_tenant": last[_TENANT], "after_id": last[_ID]}
            statement = _COMPLETED_NEXT

    def fee_bands(self, provider: str) -> list[FeeBand]:
        with system_transaction(self._conn):
            rows = self._conn.execute(_FEE_BANDS, [provider]).fetchall()
        return [
            FeeBand(
                tenant_id=row["tenant_id"],
                provider=row["provider"],
                payment_method=row["payment_method"],
                currency=row["currency"],
                min_basis_points=row["min_basis_points"],
                max_basis_points=row["max_basis_points"],
                fixed=row["fixed_minor"],
            )
            for row in rows
        ]


def _execution(row: tuple[Any, ...]) -> OurExecution:
    """One row of _COLUMNS (and, from a lookup, its reversals' kinds and amounts) as the engine's OurExecution."""
    kinds = row[_KINDS] if len(row) > _KINDS else None
    return OurExecution(
        tenant_id=row[_TENANT],
        execution_id=row[_ID],
        provider=row[_PROVIDER],
        provider_reference=row[_REFERENCE],
        amount=row[_AMOUNT],
        currency=row[_CURRENCY],
        status=_STATUSES[row[_STATUS]],
        submitted_at=row[_SUBMITTED],
        finished_at=row[_FINISHED],
        reversals=tuple(
            RecordedReversal(_REVERSAL_KINDS[kind], amount) for kind, amount in zip(kinds, row[_AMOUNTS], strict=True)
        )
        if kinds
        else (),
    )
