"""Settlement reports and their discrepancies in PostgreSQL (sql/20261216_billing_settlement_reports.sql).

The settlement_report function saves each report once, as billing_worker: its row, its discrepancies (COPY, in
batches, streamed from the engine's iterable) and the mark on the report it supersedes commit in one transaction,
so no reader ever sees a report half written and a provider's period always has one current report. A report id
that exists already is a re-run of the same files: nothing is written. The settlement API, as billing_finance,
lists and reads them and resolves discrepancies, each resolution with its audit entry in one transaction.

Reports are platform-wide (one provider's file covers many tenants): nothing here is scoped to a tenant, and the
tenant of a discrepancy is a filter, not a wall. The finance scope of the API and the grants are the walls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from itertools import islice
from typing import Any, Final
from uuid import UUID

from psycopg.types.json import Jsonb

from billing.audit.hooks import operator_action
from billing.audit.recorder import record_audit_event
from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import apply_timeouts
from billing.domain.errors import (
    FieldError,
    SettlementDiscrepancyNotFound,
    SettlementDiscrepancyResolvedAlready,
    SettlementReportNotFound,
    ValidationFailed,
)
from billing.settlement.outcome import Discrepancy, DiscrepancyClass, ReportSummary

# Rows per COPY statement: each batch is one statement, well inside the transaction's statement timeout, and the
# engine's iterable is drained this many at a time, so a million discrepancies are never held at once.
COPY_BATCH_SIZE: Final = 5000
# A concurrent save of the same provider and period holds the lock for as long as its COPY runs (a million rows
# take well under a minute); the second save waits for it, then finds its report there or supersedes it.
SAVE_LOCK_TIMEOUT_MS: Final = 120_000
# The database's bounds on a resolution (settlement_discrepancies_note_length), checked first so the API can say so.
MAX_NOTE_LENGTH: Final = 1000
RESOLVED_ACTION: Final = "settlement_discrepancy_resolved"

_LOCK = (
    "select set_config('lock_timeout', %s, true),"
    " pg_advisory_xact_lock(hashtextextended('billing.settlement_reports:' || %s || ':' || %s || ':' || %s, 0))"
)
_EXISTS = "select 1 from billing.settlement_reports where id = %s"
_CURRENT = """
select id from billing.settlement_reports
 where provider = %s and period_start = %s and period_end = %s and superseded_by is null
"""
_INSERT_REPORT = """
insert into billing.settlement_reports
    (id, provider, period_start, period_end, generated_at, summary, discrepancy_count, payouts_balance, supersedes)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_MARK_SUPERSEDED = "update billing.settlement_reports set superseded_by = %s where id = %s and superseded_by is null"
_COPY_COLUMNS: Final = (
    "id", "report_id", "class", "also", "source", "line_number", "provider_reference", "record_kind", "batch",
    "payment_method", "tenant_id", "execution_id", "expected_amount", "expected_currency", "reported_amount",
    "reported_currency", "detail",
)  # fmt: skip
_COPY = f"copy billing.settlement_discrepancies ({', '.join(_COPY_COLUMNS)}) from stdin"

_REPORT_COLUMNS = """
id, provider, period_start, period_end, generated_at, discrepancy_count, payouts_balance, supersedes,
superseded_by, created_at, summary -> 'counts' as counts
"""
_LIST_REPORTS = f"""
select {_REPORT_COLUMNS} from billing.settlement_reports
 where (%(provider)s::text is null or provider = %(provider)s)
   and (%(period_from)s::date is null or period_end > %(period_from)s)
   and (%(period_to)s::date is null or period_start < %(period_to)s)
   and (not %(current_only)s or superseded_by is null)
   and (%(after_created_at)s::timestamptz is null or (created_at, id) < (%(after_created_at)s, %(after_id)s::uuid))
 order by created_at desc, id desc
 limit %(limit)s
"""
_GET_REPORT = f"""
select {_REPORT_COLUMNS}, summary,
       (select count(*) from billing.settlement_discrepancies d
         where d.report_id = r.id and d.resolved_at is null) as unresolved_count
  from billing.settlement_reports r where id = %s
"""
_FIND_REPORT = f"select {_REPORT_COLUMNS}, summary from billing.settlement_reports where id = %s"
_LIST_DISCREPANCIES = """
select * from billing.settlement_discrepancies
 where report_id = %(report_id)s
   and (%(class)s::text is null or class = %(class)s)
   and (%(resolved)s::boolean is null or (resolved_at is not null) = %(resolved)s)
   and (%(unresolved_only)s is false or resolved_at is null)
   and (%(tenant_id)s::uuid is null or tenant_id = %(tenant_id)s)
   and (%(after_class)s::text is null or (class, id) > (%(after_class)s, %(after_id)s::uuid))
 order by class, id
 limit %(limit)s
"""
_GET_DISCREPANCY = "select * from billing.settlement_discrepancies where report_id = %s and id = %s"
# resolved_at is set by the database's trigger to its own clock; the statement's value only says "now, resolved".
_RESOLVE = """
update billing.settlement_discrepancies
   set resolved_at = now(), resolved_by = %s, resolution_note = %s
 where report_id = %s and id = %s and resolved_at is null
returning *
"""


@dataclass(frozen=True, slots=True)
class SaveOutcome:
    """created: False when the report was saved before (same files, same id): nothing was written this time.
    superseded: the report of the same provider and period that was current until this one."""

    created: bool
    superseded: UUID | None


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A saved report: its figures, its place in the supersession chain, and (from get_report) its summary."""

    id: UUID
    provider: str
    period_start: date
    period_end: date
    generated_at: datetime
    discrepancy_count: int
    payouts_balance: bool
    supersedes: UUID | None
    superseded_by: UUID | None
    created_at: datetime
    counts: Mapping[str, int]
    summary: Mapping[str, Any] | None = None
    unresolved_count: int | None = None

    @property
    def current(self) -> bool:
        return self.superseded_by is None

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": str(self.id),
            "provider": self.provider,
            "period": {"start": self.period_start.isoformat(), "end": self.period_end.isoformat()},
            "generated_at": self.generated_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "current": self.current,
            "supersedes": _text(self.supersedes),
            "superseded_by": _text(self.superseded_by),
            "discrepancy_count": self.discrepancy_count,
            "payouts_balance": self.payouts_balance,
            "counts": dict(self.counts),
        }
        if self.unresolved_count is not None:
            document["unresolved_count"] = self.unresolved_count
        if self.summary is not None:
            document["summary"] = dict(self.summary)
        return document


@dataclass(frozen=True, slots=True)
class Resolution:
    resolved_at: datetime
    resolved_by: str
    note: str

    def as_dict(self) -> dict[str, str]:
        return {"resolved_at": self.resolved_at.isoformat(), "resolved_by": self.resolved_by, "note": self.note}


@dataclass(frozen=True, slots=True)
class StoredDiscrepancy:
    """A saved discrepancy as its report found it, and its resolution once finance has given one."""

    id: UUID
    discrepancy: Discrepancy
    resolution: Resolution | None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.discrepancy.as_dict(),
            "id": str(self.id),
            "report_id": str(self.discrepancy.report_id),
            "resolved": self.resolution is not None,
            "resolution": None if self.resolution is None else self.resolution.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """Filters and position of one page of reports (newest first). A period filter keeps the reports whose period
    shares a day with [period_from, period_to); `after` is the last (created_at, id) already seen."""

    provider: str | None = None
    period_from: date | None = None
    period_to: date | None = None
    current_only: bool = False
    after: tuple[datetime, UUID] | None = None
    limit: int = 20


@dataclass(frozen=True, slots=True)
class DiscrepancyQuery:
    """Filters and position of one page of a report's discrepancies, in (class, id) order; `after` is the last
    (class, id) already seen."""

    report_id: UUID
    discrepancy_class: DiscrepancyClass | None = None
    resolved: bool | None = None
    tenant_id: UUID | None = None
    after: tuple[DiscrepancyClass, UUID] | None = None
    limit: int = 100


class SettlementReportStore:
    """Saves reports (the engine, as billing_worker); lists, reads and resolves them (the API, as billing_finance).

    Every method runs its own transaction on the connection it is given (autocommit, billing.db.connection).
    """

    def __init__(self, *, batch_size: int = COPY_BATCH_SIZE) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self._batch_size = batch_size

    def save(self, conn: Connection, summary: ReportSummary, discrepancies: Iterable[Discrepancy]) -> SaveOutcome:
        """Keep the report and its discrepancies, superseding the current report of its provider and period.

        One transaction: the report, every discrepancy and the supersession commit together or not at all. The
        iterable is drained inside it, so it must not wait on anything (no S3 or provider call while the
        transaction is open): produce the items from memory or a local spool. The stored summary names the report
        it supersedes as found here, whatever `summary.supersedes` said (another run may have saved one since).
        """
        period = (summary.provider, summary.period_start.isoformat(), summary.period_end.isoformat())
        with translated_guard_errors(), conn.transaction():
            apply_timeouts(conn)
            # One saver per provider and period at a time: the second sees the first's report and either is a
            # re-run of it (same id) or supersedes it. Without the lock both would insert a current report.
            conn.execute(_LOCK, [str(SAVE_LOCK_TIMEOUT_MS), *period])
            if conn.execute(_EXISTS, [summary.report_id]).fetchone() is not None:
                return SaveOutcome(created=False, superseded=None)
            current = conn.execute(_CURRENT, [summary.provider, summary.period_start, summary.period_end]).fetchone()
            previous: UUID | None = current["id"] if current else None
            stored = dataclasses.replace(summary, supersedes=previous)
            conn.execute(
                _INSERT_REPORT,
                [
                    stored.report_id, stored.provider, stored.period_start, stored.period_end, stored.generated_at,
                    Jsonb(stored.as_dict()), stored.discrepancy_count, stored.payouts_balance, previous,
                ],
            )  # fmt: skip
            self._copy(conn, stored.report_id, discrepancies)
            if previous is not None:
                marked = conn.execute(_MARK_SUPERSEDED, [stored.report_id, previous]).rowcount
                assert marked == 1, "the current report was read under the lock; it cannot have moved"
        return SaveOutcome(created=True, superseded=previous)

    def _copy(self, conn: Connection, report_id: UUID, discrepancies: Iterable[Discrepancy]) -> None:
        with conn.cursor() as cursor:
            for batch in _batches(iter(discrepancies), self._batch_size):
                with cursor.copy(_COPY) as copy:
                    for item in batch:
                        if item.report_id != report_id:
                            raise ValueError(f"discrepancy {item.id} belongs to report {item.report_id}")
                        copy.write_row(_copy_row(item))

    def list_reports(self, conn: Connection, query: ReportQuery) -> tuple[list[StoredReport], bool]:
        """One page of reports, newest first, and whether more follow."""
        params = {
            "provider": query.provider,
            "period_from": query.period_from,
            "period_to": query.period_to,
            "current_only": query.current_only,
            "after_created_at": query.after[0] if query.after else None,
            "after_id": query.after[1] if query.after else None,
            "limit": query.limit + 1,  # one extra row tells whether another page exists
        }
        rows = _read(conn, _LIST_REPORTS, params)
        return [_report(row) for row in rows[: query.limit]], len(rows) > query.limit

    def get_report(self, conn: Connection, report_id: UUID) -> StoredReport:
        """The report with its summary and how many of its discrepancies are unresolved (finance: it reads the
        discrepancies); SettlementReportNotFound if there is none."""
        rows = _read(conn, _GET_REPORT, [report_id])
        if not rows:
            raise SettlementReportNotFound(f"settlement report {report_id} not found")
        return _report(rows[0])

    def find_report(self, conn: Connection, report_id: UUID) -> StoredReport | None:
        """The report with its summary, or None; reads the reports table only, so the worker may ask too."""
        rows = _read(conn, _FIND_REPORT, [report_id])
        return _report(rows[0]) if rows else None

    def discrepancies(self, conn: Connection, query: DiscrepancyQuery) -> tuple[list[StoredDiscrepancy], bool]:
        """One page of a report's discrepancies and whether more follow; 404 if the report does not exist."""
        params = {
            "report_id": query.report_id,
            "class": query.discrepancy_class.value if query.discrepancy_class else None,
            "resolved": query.resolved,
            # Spelt out as well for the planner: `resolved_at is null` is what the partial index is built on.
            "unresolved_only": query.resolved is False,
            "tenant_id": query.tenant_id,
            "after_class": query.after[0].value if query.after else None,
            "after_id": query.after[1] if query.after else None,
            "limit": query.limit + 1,
        }
        with conn.transaction():
            apply_timeouts(conn)
            if conn.execute(_EXISTS, [query.report_id]).fetchone() is None:
                raise SettlementReportNotFound(f"settlement report {query.report_id} not found")
            rows = conn.execute(_LIST_DISCREPANCIES, params).fetchall()
        return [_discrepancy(row) for row in rows[: query.limit]], len(rows) > query.limit

    def get_discrepancy(self, conn: Connection, report_id: UUID, discrepancy_id: UUID) -> StoredDiscrepancy:
        rows = _read(conn, _GET_DISCREPANCY, [report_id, discrepancy_id])
        if not rows:
            raise SettlementDiscrepancyNotFound(f"discrepancy {discrepancy_id} of report {report_id} not found")
        return _discrepancy(rows[0])

    def resolve(
        self,
        conn: Connection,
        report_id: UUID,
        discrepancy_id: UUID,
        *,
        actor: str,
        note: str,
        correlation_id: str | None = None,
        source: str | None = None,
    ) -> StoredDiscrepancy:
        """Resolve one discrepancy, once, with the audit entry of the operator's action (PCI DSS 10.2.1.2).

        SettlementDiscrepancyResolvedAlready if it was resolved before (of two operators at once, one wins: the
        update waits for the other's row lock, then finds it resolved); SettlementDiscrepancyNotFound if the
        report has no such discrepancy. The database refuses a card number in the note (CardDataRefused).
        """
        _check_note(note)
        with translated_guard_errors(), conn.transaction():
            apply_timeouts(conn)
            row = conn.execute(_RESOLVE, [actor, note, report_id, discrepancy_id]).fetchone()
            if row is None:
                existing = conn.execute(_GET_DISCREPANCY, [report_id, discrepancy_id]).fetchone()
                if existing is None:
                    raise SettlementDiscrepancyNotFound(f"discrepancy {discrepancy_id} of report {report_id} not found")
                raise SettlementDiscrepancyResolvedAlready(
                    f"discrepancy {discrepancy_id} was resolved at {existing['resolved_at'].isoformat()}",
                    discrepancy_id=str(discrepancy_id),
                )
            resolved = _discrepancy(row)
            record_audit_event(
                conn,
                operator_action(
                    RESOLVED_ACTION,
                    actor=actor,
                    resource_type="settlement_discrepancy",
                    resource_id=str(discrepancy_id),
                    tenant_id=resolved.discrepancy.tenant_id,
                    correlation_id=correlation_id,
                    source=source,
                    details={
                        "report_id": str(report_id),
                        "class": resolved.discrepancy.discrepancy_class.value,
                        "note_length": str(len(note)),
                    },
                ),
            )
        return resolved


def _check_note(note: str) -> None:
    # The same bounds as the database's, so a caller learns them as a 422 naming the field; card numbers are the
    # database's to refuse (BE013), whoever writes.
    if not note.strip():
        raise ValidationFailed([FieldError("note", "blank", "note must say why the discrepancy is resolved")])
    if len(note) > MAX_NOTE_LENGTH:
        raise ValidationFailed([FieldError("note", "too_long", f"note is at most {MAX_NOTE_LENGTH} characters")])


def _batches(items: Iterator[Discrepancy], size: int) -> Iterator[list[Discrepancy]]:
    while batch := list(islice(items, size)):
        yield batch


def _copy_row(item: Discrepancy) -> tuple[object, ...]:
    return (
        item.id, item.report_id, item.discrepancy_class.value, [c.value for c in item.also], item.source,
        item.line_number, item.provider_reference, item.record_kind, item.batch, item.payment_method, item.tenant_id,
        item.execution_id, item.expected_amount, item.expected_currency, item.reported_amount, item.reported_currency,
        item.detail,
    )  # fmt: skip


def _read(conn: Connection, statement: str, params: Mapping[str, Any] | list[Any]) -> list[dict[str, Any]]:
    with conn.transaction():
        apply_timeouts(conn)
        return conn.execute(statement, params).fetchall()


def _text(value: UUID | None) -> str | None:
    return None if value is None else str(value)


def _report(row: Mapping[str, Any]) -> StoredReport:
    return StoredReport(
        id=row["id"],
        provider=row["provider"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        generated_at=row["generated_at"],
        discrepancy_count=row["discrepancy_count"],
        payouts_balance=row["payouts_balance"],
        supersedes=row["supersedes"],
        superseded_by=row["superseded_by"],
        created_at=row["created_at"],
        counts=row["counts"] or {},
        summary=row.get("summary"),
        unresolved_count=row.get("unresolved_count"),
    )


def _discrepancy(row: Mapping[str, Any]) -> StoredDiscrepancy:
    found = Discrepancy(
        report_id=row["report_id"],
        discrepancy_class=DiscrepancyClass(row["class"]),
        source=row["source"],
        line_number=row["line_number"],
        provider_reference=row["provider_reference"],
        record_kind=row["record_kind"],
        tenant_id=row["tenant_id"],
        execution_id=row["execution_id"],
        expected_amount=row["expected_amount"],
        expected_currency=row["expected_currency"],
        reported_amount=row["reported_amount"],
        reported_currency=row["reported_currency"],
        detail=row["detail"],
        also=tuple(DiscrepancyClass(c) for c in row["also"]),
        batch=row["batch"],
        payment_method=row["payment_method"],
    )
    resolution = (
        Resolution(row["resolved_at"], row["resolved_by"], row["resolution_note"])
        if row["resolved_at"] is not None
        else None
    )
    return StoredDiscrepancy(row["id"], found, resolution)
