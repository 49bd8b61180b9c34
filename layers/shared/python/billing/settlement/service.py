"""The settlement report use case: each provider's files of a period reconciled, saved, rendered and announced.

    run = SettlementReportService(conn, files, reports, observer, store=store, publisher=bus).run(period)

One report per provider with a folder in the settlement bucket or executions in the period. Each report goes
through the same steps, in this order, with no database transaction open while S3 is read or written:

1. reconcile: the provider's files streamed from S3 (and the look-back days' files), matched chunk by chunk
   (reconciliation.engine); findings spooled on local disk;
2. save: the report and every discrepancy in one transaction (store.SettlementReportStore, COPY in batches). The
   same files give the same report id: a re-run changes nothing in the database, and a late or corrected file
   gives a new report that supersedes the current one;
3. render: JSON, CSV and HTML to the reports bucket under keys named by the report id, then the period's index;
4. announce: metrics and log lines per class (observer) and one event on the bus (publisher), after the commit.

The CLI (python -m billing.settlement) runs steps 1-4 through the same ProviderReporter on local files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from uuid import UUID

from billing.db.connection import Connection
from billing.db.settlement_queries import PostgresExecutionLookup, providers_in_period
from billing.db.settlement_staging import PostgresSettlementStaging
from billing.observability import logger
from billing.settlement.events import REPORT_EVENT_TYPE, NoPublisher, report_event_detail
from billing.settlement.files import SETTLEMENT_PREFIX, is_valid_provider, settlement_file_key
from billing.settlement.html_report import render_html
from billing.settlement.outcome import DISCREPANCY_CLASSES, Discrepancy, DiscrepancyClass, ReportSummary
from billing.settlement.period import SettlementPeriod
from billing.settlement.ports import ObjectStore, ReportOutputs, ReportPublisher, SettlementObserver
from billing.settlement.reconciliation.engine import CHUNK_RECORDS, Reconciler, Reconciliation
from billing.settlement.reconciliation.ports import ExecutionLookup, SettlementStaging
from billing.settlement.reconciliation.reading import SettlementFile
from billing.settlement.report import (
    CSV_CONTENT_TYPE,
    HTML_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    ReportKeys,
    csv_chunks,
    json_chunks,
    period_index,
    period_index_key,
)
from billing.settlement.store import ReportQuery, SettlementReportStore

Clock = Callable[[], datetime]

# Items per class on the HTML page; the CSV and the JSON hold every one.
SHOWN_PER_CLASS: Final = 200
_SAMPLE: Final = 20


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SettlementReportConfig:
    # A provider lists a debit on the day it settles; we complete it when the next webhook or reconcile run tells us,
    # which may be after midnight. Items listed in the look-back days are therefore not missing_from_file, and
    # listing them again is a duplicate. Look-back files are not otherwise reported: their own period's report did.
    lookback_days: int = 1
    chunk_records: int = CHUNK_RECORDS
    shown_per_class: int = SHOWN_PER_CLASS
    # Where findings are spooled between the pass and the writes (None: the system's temporary directory, /tmp).
    spool_directory: str | None = None
    # Stage the files in the database and decide the exact matches there (reconciliation.staged): the same report,
    # in a fraction of the time. False reads every row in Python (the path the staged one is tested against).
    staged: bool = True

    def __post_init__(self) -> None:
        if self.lookback_days < 0:
            raise ValueError("lookback_days cannot be negative")


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """One provider's report of the period: where it is, whether this run saved it, what it replaced."""

    summary: ReportSummary
    keys: ReportKeys | None  # None when nothing was rendered (a dry run)
    created: bool
    supersedes: UUID | None
    persisted: bool
    # False for a re-run of saved files that found something else (the database changed since): the saved report
    # stands, and these figures are only what this run found.
    reproduced: bool = True

    def as_dict(self) -> dict[str, Any]:
        summary = self.summary
        return {
            "provider": summary.provider,
            "report_id": str(summary.report_id),
            "created": self.created,
            "persisted": self.persisted,
            "reproduced": self.reproduced,
            "supersedes": None if self.supersedes is None else str(self.supersedes),
            "discrepancy_count": summary.discrepancy_count,
            "payouts_balance": summary.payouts_balance,
            "counts": {c.value: summary.counts.get(c, 0) for c in summary.counts},
            "files": len(summary.files),
            "file_errors": len(summary.file_errors),
            "line_errors": summary.line_error_count,
            "missing_files": len(summary.missing_files),
            "report": None if self.keys is None else self.keys.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class SettlementReportRun:
    """A period's run: one report per provider, and the period index naming them."""

    period: SettlementPeriod
    generated_at: datetime
    reports: tuple[ProviderReport, ...]
    index_key: str

    def summary(self) -> dict[str, Any]:
        """What the function returns: the period, each report, and the figures summed over providers."""
        counts = {c.value: 0 for c in (*DISCREPANCY_CLASSES, DiscrepancyClass.MATCHED)}
        for report in self.reports:
            for klass, count in report.summary.counts.items():
                counts[klass.value] = counts.get(klass.value, 0) + count
        summaries = [r.summary for r in self.reports]
        return {
            **self.period.as_dict(),
            "period_closed": self.period.end_at <= self.generated_at,
            "complete": all(not (s.file_errors or s.missing_files or s.line_error_count) for s in summaries),
            "payouts_balance": all(s.payouts_balance for s in summaries),
            "files": sum(len(s.files) for s in summaries),
            "missing_files": sum(len(s.missing_files) for s in summaries),
            "file_errors": sum(len(s.file_errors) for s in summaries),
            "line_errors": sum(s.line_error_count for s in summaries),
            "discrepancies": sum(s.discrepancy_count for s in summaries),
            "counts": counts,
            "reports": [r.as_dict() for r in self.reports],
            "report_json": self.index_key,
        }


@dataclass(slots=True)
class ReportOutcome:
    """A provider's report as reported, with its findings readable until the `with` block ends."""

    report: ProviderReport
    reconciliation: Reconciliation

    def discrepancies(self) -> Iterator[Discrepancy]:
        return self.reconciliation.discrepancies()


class ProviderReporter:
    """Reconciles one provider's period and reports it: save, render, flag, announce (steps 1-4 above)."""

    def __init__(
        self,
        conn: Connection,
        *,
        lookup: ExecutionLookup | None = None,
        staging: SettlementStaging | None = None,
        store: SettlementReportStore | None = None,
        outputs: ReportOutputs | None,
        publisher: ReportPublisher | None = None,
        observer: SettlementObserver | None = None,
        config: SettlementReportConfig | None = None,
    ) -> None:
        self._conn = conn
        self._lookup = lookup or PostgresExecutionLookup(conn)
        self._config = config or SettlementReportConfig()
        self._staging = staging
        # Staging matches against the database itself: a caller that brings its own lookup brings its own
        # executions, and is read row by row against them.
        if staging is None and lookup is None and self._config.staged:
            self._staging = PostgresSettlementStaging(conn, spool_directory=self._config.spool_directory)
        self._store = store or SettlementReportStore()
        self._outputs = outputs
        self._publisher = publisher or NoPublisher()
        self._observer = observer

    @contextmanager
    def report(
        self,
        *,
        provider: str,
        period: SettlementPeriod,
        files: Sequence[SettlementFile],
        lookback: Sequence[SettlementFile] = (),
        missing_files: Sequence[str] = (),
        file_errors: Sequence[Mapping[str, Any]] = (),
        generated_at: datetime,
        persist: bool = True,
    ) -> Iterator[ReportOutcome]:
        config = self._config
        reconciler = Reconciler(
            self._lookup,
            staging=self._staging,
            chunk_records=config.chunk_records,
            spool_directory=config.spool_directory,
        )
        with reconciler.run(
            provider=provider,
            period=period,
            files=files,
            lookback=lookback,
            missing_files=missing_files,
            file_errors=file_errors,
            generated_at=generated_at,
        ) as reconciled:
            created, supersedes, render = False, None, persist
            if persist:
                created, supersedes, render = self._save(reconciled)
            summary = dataclasses.replace(reconciled.summary, supersedes=supersedes)
            reconciled.summary = summary
            keys = ReportKeys.for_report(period, provider, summary.report_id)
            rendered = render and self._outputs is not None
            if rendered:
                self._render(reconciled, keys)
            if self._observer is not None:
                samples = _samples(reconciled.discrepancies())
                self._observer.report_finished(summary, keys, samples, reconciled.spool.amounts, created=created)
            # A re-run that found something else than the saved report does not announce it again: the saved
            # report stands, and its first run announced it.
            if persist and render:
                detail = report_event_detail(
                    summary, keys, created=created, supersedes=None if supersedes is None else str(supersedes)
                )
                self._publisher.publish(REPORT_EVENT_TYPE, detail)
            # A re-run that left the first run's objects alone still names them.
            named = rendered or (persist and self._outputs is not None)
            report = ProviderReport(
                summary,
                keys if named else None,
                created,
                supersedes,
                persisted=persist,
                reproduced=render or not persist,
            )
            yield ReportOutcome(report, reconciled)

    def _save(self, reconciled: Reconciliation) -> tuple[bool, UUID | None, bool]:
        """(created, the report it supersedes, whether to render it). A re-run of the same files renders again only
        if it found what the saved report says: then it restores objects a failed run may not have written; if the
        database changed since (a webhook arrived), the saved report stands and its objects are left as they are."""
        summary = reconciled.summary
        outcome = self._store.save(self._conn, summary, reconciled.discrepancies())
        if outcome.created:
            return True, outcome.superseded, True
        stored = self._stored(summary)
        if stored is None:
            return False, None, False
        counts = {c.value: summary.counts.get(c, 0) for c in summary.counts}
        same = {k: v for k, v in stored.counts.items() if v} == {k: v for k, v in counts.items() if v}
        if not same:
            logger.warning(
                "billing.settlement.rerun_differs",
                extra={
                    "event": "billing.settlement.rerun_differs",
                    "report_id": str(summary.report_id),
                    "saved_counts": dict(stored.counts),
                    "found_counts": counts,
                },
            )
        return False, stored.supersedes, same

    def _stored(self, summary: ReportSummary) -> Any:
        query = ReportQuery(
            provider=summary.provider, period_from=summary.period_start, period_to=summary.period_end, limit=100
        )
        while True:
            page, more = self._store.list_reports(self._conn, query)
            for stored in page:
                if stored.id == summary.report_id:
                    return stored
            if not more or not page:
                return None
            query = dataclasses.replace(query, after=(page[-1].created_at, page[-1].id))

    def _render(self, reconciled: Reconciliation, keys: ReportKeys) -> None:
        outputs = self._outputs
        assert outputs is not None
        summary = reconciled.summary
        # The JSON last: once it is there, the CSV and the HTML are too.
        outputs.put_stream(keys.csv, csv_chunks(reconciled.discrepancies()), CSV_CONTENT_TYPE)
        html = render_html(summary, reconciled.discrepancies(), shown_per_class=self._config.shown_per_class)
        outputs.put(keys.html, html.encode(), HTML_CONTENT_TYPE)
        outputs.put_stream(keys.json, json_chunks(summary, reconciled.discrepancies()), JSON_CONTENT_TYPE)


class SettlementReportService:
    """Reconciles one period per run, one report per provider; see docs/settlement.md for the classes and outputs."""

    def __init__(
        self,
        conn: Connection,
        settlement_files: ObjectStore,
        reports: ObjectStore,
        observer: SettlementObserver,
        *,
        store: SettlementReportStore | None = None,
        publisher: ReportPublisher | None = None,
        clock: Clock = _utc_now,
        config: SettlementReportConfig | None = None,
    ) -> None:
        self._conn = conn
        self._files = settlement_files
        self._reports = reports
        self._config = config or SettlementReportConfig()
        self._clock = clock
        self._reporter = ProviderReporter(
            conn, store=store, outputs=reports, publisher=publisher, observer=observer, config=self._config
        )

    def run(self, period: SettlementPeriod) -> SettlementReportRun:
        generated_at = self._clock()
        folder_errors, providers = self._providers_with_files()
        # A provider we submitted to in the period owes us a file for every day of it, even if it never sent one.
        for provider in providers_in_period(self._conn, start=period.start_at, end=period.end_at):
            if provider in providers:
                continue
            if is_valid_provider(provider):
                providers.append(provider)
            else:
                reason = f"executions of provider {provider[:40]!r}: the name cannot be a settlement folder"
                folder_errors.append({"source": SETTLEMENT_PREFIX, "reason": reason})
        lookback_days = [period.start - timedelta(days=n) for n in range(self._config.lookback_days, 0, -1)]
        reports: list[ProviderReport] = []
        for provider in sorted(providers):
            files, missing = self._files_of(provider, period.days())
            earlier, _ = self._files_of(provider, lookback_days)
            with self._reporter.report(
                provider=provider,
                period=period,
                files=files,
                lookback=earlier,
                missing_files=missing,
                file_errors=folder_errors,
                generated_at=generated_at,
            ) as outcome:
                reports.append(outcome.report)
        index_key = period_index_key(period)
        index = period_index(period, generated_at, [r.as_dict() for r in reports])
        self._reports.put(index_key, index, JSON_CONTENT_TYPE)
        return SettlementReportRun(period, generated_at, tuple(reports), index_key)

    def _providers_with_files(self) -> tuple[list[dict[str, Any]], list[str]]:
        errors: list[dict[str, Any]] = []
        providers: list[str] = []
        for folder in self._files.folders(SETTLEMENT_PREFIX):
            if is_valid_provider(folder):
                providers.append(folder)
            else:
                source = f"{SETTLEMENT_PREFIX}{folder}/"
                errors.append({"source": source, "reason": "not a provider folder (lower-case [a-z0-9_-]); not read"})
        return errors, providers

    def _files_of(self, provider: str, days: Sequence[date]) -> tuple[list[SettlementFile], list[str]]:
        """Each day's file (settlements/<provider>/<day>.csv) or files (settlements/<provider>/<day>/...), and the
        days that have none, named by their file key."""
        files: list[SettlementFile] = []
        missing: list[str] = []
        for day in days:
            single = settlement_file_key(provider, day)
            folder = single.removesuffix(".csv") + "/"
            keys = [k for k in self._files.keys(folder.removesuffix("/")) if k == single or k.startswith(folder)]
            if not keys:
                missing.append(single)
            files.extend(SettlementFile(key, self._opener(key), day) for key in keys)
        return files, missing

    def _opener(self, key: str) -> Callable[[], Iterator[bytes]]:
        def open_object() -> Iterator[bytes]:
            # Listed a moment ago; gone now reads as an empty file, which is reported as one.
            return self._files.chunks(key) or iter(())

        return open_object


def _samples(discrepancies: Iterator[Discrepancy]) -> dict[DiscrepancyClass, list[Discrepancy]]:
    samples: dict[DiscrepancyClass, list[Discrepancy]] = {}
    for discrepancy in discrepancies:
        kept = samples.setdefault(discrepancy.discrepancy_class, [])
        if len(kept) < _SAMPLE:
            kept.append(discrepancy)
    return samples
