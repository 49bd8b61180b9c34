"""SQL of the settlement report: our side of a provider's settlement files, across tenants, read a chunk at a time.

Every read runs in its own billing.db.tenancy.system_transaction (a provider's file spans our tenants) and only
reads: nothing here locks or writes. The engine calls between two reads of a file, so no transaction is ever open
while a file streams from S3. Each execution carries its reversals that have not failed (kind and amount, in the
order they were recorded), because the execution row itself stays completed when money goes back.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID, SafeUUID

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
# Rows are read as tuples, in binary, and narrowly: a report reads each execution up to twice (by reference, and
# in the period scan), a million-line file up to two million rows, so what each row costs decides a report's time.
# * ids come as their 16 bytes (uuid_send) and become UUIDs without the driver's slower uuid parsing; the few
#   tenants' UUIDs are made once per lookup;
# * the reversals are aggregated once per lookup for the executions found (a hash join over the few that have
#   any), not by a subquery per execution;
# * submitted_at is read for pending executions only (OurExecution.describe shows it for those), finished_at in the
#   period scan only, and the provider is the one asked for (every statement filters on it).
_TENANT, _ID, _REFERENCE, _AMOUNT, _CURRENCY, _STATUS, _SUBMITTED, _KINDS, _AMOUNTS = range(9)
_FINISHED: Final = 5  # in the period scan's rows
_STATUSES: Final = {status.value: status for status in ExecutionStatus}
_REVERSAL_KINDS: Final = {kind.value: kind for kind in ReversalKind}

# The executions found, then the reversals that have not failed of those that have any, in recorded order: one
# aggregate over a join per lookup.
_LOOKUP: Final = """
with found as materialized (
    select e.tenant_id, e.id, e.provider_reference, e.amount, e.currency, e.status,
           case when e.status = 'pending' then e.submitted_at end as submitted_at
      from billing.billing_executions e
     where {condition}
), reversed as (
    select r.tenant_id, r.execution_id,
           array_agg(r.kind order by r.recorded_at, r.id) as kinds,
           array_agg(r.amount order by r.recorded_at, r.id) as amounts
      from billing.execution_reversals r
      join found f on r.tenant_id = f.tenant_id and r.execution_id = f.id
     where r.status <> 'failed'
     group by r.tenant_id, r.execution_id
)
select uuid_send(f.tenant_id), uuid_send(f.id), f.provider_reference, f.amount, f.currency, f.status,
       f.submitted_at, rv.kinds, rv.amounts
  from found f
  left join reversed rv on rv.tenant_id = f.tenant_id and rv.execution_id = f.id
"""
# Served by billing_executions_provider_reference_lookup (payment_provider, provider_reference).
_BY_REFERENCE: Final = _LOOKUP.format(
    condition="e.payment_provider = %(provider)s and e.provider_reference = any(%(references)s)"
)
# Served by billing_executions_id_lookup (sql/20261217_billing_settlement_fee_bands.sql): the id alone, since the
# provider echoes our execution id, not our tenant.
_BY_ID: Final = _LOOKUP.format(condition="e.id = any(%(ids)s::uuid[]) and e.payment_provider = %(provider)s")

# What the provider owes a listing for: completed in [start, end), in (finished_at, tenant_id, id) pages, served by
# billing_executions_finished_at_submitted. The page's last row carries the keyset of the next.
PERIOD_COLUMNS: Final = (
    "uuid_send(e.tenant_id), uuid_send(e.id), e.provider_reference, e.amount, e.currency, e.finished_at"
)
# Owed a listing by the provider's files of [start, end): completed there in the period, under a reference.
OWED_A_LISTING: Final = """
e.payment_provider = %(provider)s and e.status = 'completed' and e.provider_reference is not null
   and e.finished_at >= %(start)s and e.finished_at < %(end)s
"""
_COMPLETED_FIRST: Final = f"""
select {PERIOD_COLUMNS} from billing.billing_executions e
 where {OWED_A_LISTING}
 order by e.finished_at, e.tenant_id, e.id
 limit %(limit)s
"""
_COMPLETED_NEXT: Final = f"""
select {PERIOD_COLUMNS} from billing.billing_executions e
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


_new_uuid: Final = object.__new__
_set: Final = object.__setattr__
_from_bytes: Final = int.from_bytes
_new_execution: Final = tuple.__new__


class PostgresExecutionLookup:
    """The reconciliation engine's ExecutionLookup over one connection."""

    def __init__(self, conn: Connection, *, page: int = COMPLETED_PAGE) -> None:
        self._conn = conn
        self._page = page
        self._tenants: dict[bytes, UUID] = {}

    def find(self, provider: str, references: Collection[str], execution_ids: Collection[UUID]) -> list[OurExecution]:
        conn = self._conn
        with system_transaction(conn), conn.cursor(row_factory=tuple_row, binary=True) as cursor:
            extend_statement_timeout(conn)
            rows = (
                cursor.execute(_BY_REFERENCE, {"provider": provider, "references": list(references)}).fetchall()
                if references
                else []
            )
            found = [self._execution(provider, row) for row in rows]
            # The id fallback only for ids no reference found: usually none, so one statement per chunk.
            unresolved = set(execution_ids) - {e.execution_id for e in found} if execution_ids else set()
            if unresolved:
                rows = cursor.execute(_BY_ID, {"provider": provider, "ids": list(unresolved)}).fetchall()
                found.extend(self._execution(provider, row) for row in rows)
        return found

    def completed(self, provider: str, start: datetime, end: datetime) -> Iterator[list[OurExecution]]:
        params: dict[str, Any] = {"provider": provider, "start": start, "end": end, "limit": self._page}
        statement = _COMPLETED_FIRST
        while True:
            with system_transaction(self._conn), self._conn.cursor(row_factory=tuple_row, binary=True) as cursor:
                extend_statement_timeout(self._conn)
                # billing.db.planner: the period index is in the page's order, so a page walks it and stops.
                walk_in_index_order(self._conn, forbid_sort=True)
                rows = cursor.execute(statement, params).fetchall()
            if not rows:
                return
            tenant_of = self._tenant
            yield [period_execution(provider, tenant_of(row[0]), row) for row in rows]
            if len(rows) < self._page:
                return
            last = rows[-1]
            params |= {
                "after_finished": last[_FINISHED],
                "after_tenant": uuid_of(last[0]),
                "after_id": uuid_of(last[1]),
            }
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

    def _tenant(self, data: bytes) -> UUID:
        tenant = self._tenants.get(data)
        if tenant is None:
            tenant = self._tenants[data] = uuid_of(data)
        return tenant

    def _execution(self, provider: str, row: tuple[Any, ...]) -> OurExecution:
        kinds = row[_KINDS]
        reversals = (
            tuple(
                RecordedReversal(_REVERSAL_KINDS[kind], amount)
                for kind, amount in zip(kinds, row[_AMOUNTS], strict=True)
            )
            if kinds
            else ()
        )
        return _new_execution(
            OurExecution,
            (
                self._tenant(row[_TENANT]),
                uuid_of(row[_ID]),
                provider,
                row[_REFERENCE],
                row[_AMOUNT],
                row[_CURRENCY],
                _STATUSES[row[_STATUS]],
                row[_SUBMITTED],
                None,
                reversals,
            ),
        )


def period_execution(provider: str, tenant_id: UUID, row: Sequence[Any]) -> OurExecution:
    """A completed execution of the period from a row of PERIOD_COLUMNS (its tenant already made a UUID)."""
    return _new_execution(
        OurExecution,
        (tenant_id, uuid_of(row[1]), provider, row[2], row[3], row[4], ExecutionStatus.COMPLETED, None, row[5], ()),
    )


def uuid_of(data: bytes) -> UUID:
    """UUID(bytes=data), without its argument checks (data is a uuid_send of the database's own uuid)."""
    made: UUID = _new_uuid(UUID)
    _set(made, "int", _from_bytes(data))
    _set(made, "is_safe", SafeUUID.unknown)
    return made
