"""The settlement report use case: read a period's settlement files, load our side, match, write, flag.

    run = SettlementReportService(conn, files, reports, observer).run(SettlementPeriod.daily(date(2026, 4, 10)))

A run only reads the database and the settlement bucket, and writes two objects whose keys depend on the period
alone, so running a period again (a schedule retry, an operator after a late file) replaces its report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from billing.db.connection import Connection
from billing.db.execution_repository import execution_from_row
from billing.db.settlement_queries import executions_by_reference, executions_in_period, extend_statement_timeout
from billing.db.tenancy import system_transaction
from billing.settlement.files import (
    SETTLEMENT_PREFIX,
    FileError,
    ParsedFile,
    SettlementLine,
    is_valid_provider,
    parse_settlement_file,
    settlement_file_key,
)
from billing.settlement.matching import CLASS_ORDER, InternalRecord, MatchClass, match_settlement
from billing.settlement.period import SettlementPeriod
from billing.settlement.ports import ObjectStore, SettlementObserver
from billing.settlement.report import ReportKeys, SettlementReport, build_report

Clock = Callable[[], datetime]

JSON_CONTENT_TYPE: Final = "application/json"
CSV_CONTENT_TYPE: Final = "text/csv; charset=utf-8"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SettlementReportConfig:
    # A provider lists a debit on the day it settles; we complete it when the next webhook or reconcile run tells us,
    # which may be after midnight. Items listed in the look-back days are therefore not missing_from_file, and
    # listing them again is a duplicate. Look-back files are not otherwise reported: their own period's report did.
    lookback_days: int = 1

    def __post_init__(self) -> None:
        if self.lookback_days < 0:
            raise ValueError("lookback_days cannot be negative")


@dataclass(frozen=True, slots=True)
class SettlementReportRun:
    """A written report and where it is."""

    report: SettlementReport
    keys: ReportKeys

    def summary(self) -> dict[str, Any]:
        return {**self.report.summary(), "report_json": self.keys.json, "report_csv": self.keys.csv}


@dataclass(frozen=True, slots=True)
class _Files:
    parsed: list[ParsedFile]
    missing: list[str]


class SettlementReportService:
    """Reconciles one period per run; see docs/settlement.md for the classes and the report."""

    def __init__(
        self,
        conn: Connection,
        settlement_files: ObjectStore,
        reports: ObjectStore,
        observer: SettlementObserver,
        *,
        clock: Clock = _utc_now,
        config: SettlementReportConfig | None = None,
    ) -> None:
        self._conn = conn
        self._files = settlement_files
        self._reports = reports
        self._observer = observer
        self._clock = clock
        self._config = config or SettlementReportConfig()

    def run(self, period: SettlementPeriod) -> SettlementReportRun:
        generated_at = self._clock()
        folder_errors, providers = self._providers_with_files()
        current = self._read(providers, period.days())
        lookback = [period.start - timedelta(days=n) for n in range(self._config.lookback_days, 0, -1)]
        earlier = self._read(providers, lookback)
        lines = [line for parsed in current.parsed for line in parsed.lines]
        earlier_lines = [line for parsed in earlier.parsed for line in parsed.lines]

        records = self._load_records(period, lines)
        # A provider we submitted to in the period owes us a file for every day of it, even if it never sent one.
        missing = list(current.missing)
        for provider in sorted({r.provider for r in records if _touches(period, r)} - set(providers)):
            if is_valid_provider(provider):
                missing.extend(settlement_file_key(provider, day) for day in period.days())
            else:
                message = f"executions of provider {provider[:40]!r}: the name cannot be a settlement folder"
                folder_errors.append(FileError(SETTLEMENT_PREFIX, None, message))

        items = match_settlement(lines, records, period=period, earlier_lines=earlier_lines)
        report = build_report(
            period,
            files=current.parsed,
            missing_files=missing,
            records=records,
            items=items,
            generated_at=generated_at,
            extra_errors=folder_errors,
        )
        keys = ReportKeys.for_period(period)
        # The CSV first: once the JSON (the complete report) is there, so is its CSV.
        self._reports.put(keys.csv, report.to_csv(), CSV_CONTENT_TYPE)
        self._reports.put(keys.json, report.to_json(), JSON_CONTENT_TYPE)
        self._flag(report, keys)
        return SettlementReportRun(report, keys)

    def _providers_with_files(self) -> tuple[list[FileError], list[str]]:
        errors: list[FileError] = []
        providers: list[str] = []
        for folder in self._files.folders(SETTLEMENT_PREFIX):
            if is_valid_provider(folder):
                providers.append(folder)
            else:
                source = f"{SETTLEMENT_PREFIX}{folder}/"
                errors.append(FileError(source, None, "not a provider folder (lower-case [a-z0-9_-]); not read"))
        return errors, sorted(providers)

    def _read(self, providers: Sequence[str], days: Sequence[date]) -> _Files:
        parsed: list[ParsedFile] = []
        missing: list[str] = []
        for provider in providers:
            for day in days:
                key = settlement_file_key(provider, day)
                content = self._files.get(key)
                if content is None:
                    missing.append(key)
                else:
                    parsed.append(parse_settlement_file(content, provider=provider, day=day, source=key))
        return _Files(parsed, missing)

    def _load_records(self, period: SettlementPeriod, lines: Iterable[SettlementLine]) -> list[InternalRecord]:
        """Executions submitted or finished in the period, plus every execution a line names, each once.

        Every reference is looked up, also those the period already holds: another tenant's execution under the same
        reference makes it ambiguous, whenever that one happened.
        """
        wanted: dict[str, set[str]] = {}
        for line in lines:
            wanted.setdefault(line.provider, set()).add(line.provider_reference)
        with system_transaction(self._conn) as conn:
            extend_statement_timeout(conn)
            rows = executions_in_period(conn, start=period.start_at, end=period.end_at)
            for provider in sorted(wanted):
                rows.extend(executions_by_reference(conn, provider, wanted[provider]))
        unique = {(row["tenant_id"], row["id"]): row for row in rows}
        return [_record(row) for row in unique.values()]

    def _flag(self, report: SettlementReport, keys: ReportKeys) -> None:
        by_class = {c: [item for item in report.discrepancies if item.match_class is c] for c in CLASS_ORDER}
        for match_class in CLASS_ORDER:
            if match_class is not MatchClass.MATCHED:
                self._observer.discrepancies(report.period, match_class, by_class[match_class])
        self._observer.file_problems(report.period, report.file_errors, report.missing_files)
        self._observer.report_written(report, keys)


def _touches(period: SettlementPeriod, record: InternalRecord) -> bool:
    return period.contains(record.submitted_at) or period.contains(record.finished_at)


def _record(row: dict[str, Any]) -> InternalRecord:
    return InternalRecord.from_execution(
        execution_from_row(row),
        reversed=bool(row["reversed"]),
        refund_amounts=tuple(row.get("refund_amounts") or ()),
        chargeback_amounts=tuple(row.get("chargeback_amounts") or ()),
    )
