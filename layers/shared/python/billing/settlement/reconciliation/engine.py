"""One provider's period reconciled: its files streamed in chunks, matched, totalled, and summed up in a report.

    reconciled = Reconciler(lookup).run(provider="adyen", period=period, files=files, lookback=earlier,
                                        generated_at=now)
    store.save(conn, reconciled.summary, reconciled.discrepancies())

Memory is bounded by the chunk, not the file: CHUNK_RECORDS rows are held at a time, with the executions their
references name (one lookup per chunk); across chunks only the Matcher's compact tables, the batches' sums and the
totals remain, and findings go to the spool on local disk. No database transaction is open while a file is read:
each lookup is its own, between two reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from billing.domain.money import Money
from billing.settlement.formats.records import LineError, ParseResult, ProviderRecord
from billing.settlement.outcome import (
    CLASS_SEVERITY,
    Discrepancy,
    DiscrepancyClass,
    FileRead,
    ReportSummary,
    report_id_for,
)
from billing.settlement.period import SettlementPeriod
from billing.settlement.reconciliation.fee_bands import FeeBands
from billing.settlement.reconciliation.findings import Finding, masked, masked_values
from billing.settlement.reconciliation.matching import Candidates, Matcher, ids_needed, references_needed
from billing.settlement.reconciliation.ours import OurExecution
from billing.settlement.reconciliation.payouts import Payouts
from billing.settlement.reconciliation.ports import ExecutionLookup, SettlementStaging
from billing.settlement.reconciliation.reading import ADYEN_SDR, FileReading, SettlementFile
from billing.settlement.reconciliation.spool import FindingSpool
from billing.settlement.reconciliation.staged import StagedRun, stage_run
from billing.settlement.reconciliation.totals import Totals

# Rows per lookup: one `= any(%s)` statement of up to this many references stays well inside a statement timeout,
# and the chunk with its executions stays in the tens of MB.
CHUNK_RECORDS: Final = 20_000
# Line errors quoted in the summary; all are counted (a corrupt file could have a million).
MAX_LINE_ERRORS_SHOWN: Final = 100


@dataclass(slots=True)
class Reconciliation:
    """A report's summary and its findings, spooled; close() (or `with`) removes the spool."""

    summary: ReportSummary
    spool: FindingSpool

    def __enter__(self) -> Reconciliation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def discrepancies(self) -> Iterator[Discrepancy]:
        """Every discrepancy, worst class first; a new stream each call."""
        return self.spool.discrepancies(self.summary.report_id)

    def close(self) -> None:
        self.spool.close()


@dataclass(slots=True)
class _Run:
    provider: str
    matcher: Matcher
    spool: FindingSpool
    totals: Totals = field(default_factory=Totals)
    payouts: Payouts = field(default_factory=Payouts)
    reads: list[FileRead] = field(default_factory=list)
    file_errors: list[Mapping[str, Any]] = field(default_factory=list)
    line_errors: list[Mapping[str, Any]] = field(default_factory=list)
    line_error_count: int = 0


class Reconciler:
    """Runs one provider's period; the same files (and database state) give the same report id and findings."""

    def __init__(
        self,
        lookup: ExecutionLookup,
        *,
        staging: SettlementStaging | None = None,
        chunk_records: int = CHUNK_RECORDS,
        spool_directory: str | None = None,
    ) -> None:
        """`staging`, when given, lets a run of files it can stage take the fast path (reconciliation.staged)."""
        if chunk_records < 1:
            raise ValueError("chunk_records must be positive")
        self._lookup = lookup
        self._staging = staging
        self._chunk = chunk_records
        self._spool_directory = spool_directory

    def run(
        self,
        *,
        provider: str,
        period: SettlementPeriod,
        files: Sequence[SettlementFile],
        lookback: Sequence[SettlementFile] = (),
        missing_files: Iterable[str] = (),
        file_errors: Iterable[Mapping[str, Any]] = (),
        generated_at: datetime,
    ) -> Reconciliation:
        """Read the look-back files (for listings and duplicates only), then the period's, then flag the period's
        completed executions that no file listed and the payouts that do not balance."""
        spool = FindingSpool(self._spool_directory)
        try:
            run = _Run(provider, Matcher(provider, FeeBands(self._lookup.fee_bands(provider))), spool)
            run.file_errors.extend(masked_values(e) for e in file_errors)
            staged = (
                stage_run(
                    self._staging, provider, lookback=lookback, files=files, spool_directory=self._spool_directory
                )
                if self._staging is not None
                else None
            )
            if staged is None:
                for file in lookback:
                    self._read(run, file, report=False)
                for file in files:
                    self._read(run, file, report=True)
                self._missing_from_file(run, period)
            else:
                try:
                    self._finish_staged(run, staged, period)
                finally:
                    staged.discard()
            for finding in run.payouts.findings():
                spool.add(finding)
            spool.seal()
        except BaseException:
            spool.close()
            raise
        counts = {c: spool.counts.get(c, 0) for c in CLASS_SEVERITY}
        counts[DiscrepancyClass.MATCHED] = run.matcher.matched
        notes: list[str] = []
        if generated_at < period.end_at:
            notes.append("the period has not ended: more items may settle before it does")
        if lookback:
            earlier = ", ".join(f.source for f in lookback)
            notes.append(
                f"look-back files, read for listings and duplicates only (their own report has them): {earlier}"
            )
        if run.line_error_count > len(run.line_errors):
            notes.append(f"{run.line_error_count - len(run.line_errors)} more line errors are counted but not quoted")
        summary = ReportSummary(
            report_id=report_id_for(provider, period.start, period.end, run.reads),
            provider=provider,
            period_start=period.start,
            period_end=period.end,
            generated_at=generated_at,
            files=tuple(run.reads),
            file_errors=tuple(run.file_errors),
            line_errors=tuple(run.line_errors),
            line_error_count=run.line_error_count,
            missing_files=tuple(sorted(masked(key) or key for key in missing_files)),
            totals=run.totals.currency_totals(),
            payouts=run.payouts.checks(),
            fees_by_type=run.totals.fees_by_type(),
            fees_by_payment_method=run.totals.fees_by_payment_method(),
            counts=counts,
            notes=tuple(masked(note) or note for note in notes),
        )
        return Reconciliation(summary, spool)

    def _read(self, run: _Run, file: SettlementFile, *, report: bool) -> None:
        reading = FileReading(file, run.provider)
        self._consume(run, reading.items(), lambda: reading.default_batch, report=report)
        run.reads.append(reading.read())
        if reading.file_error is not None and report:
            run.file_errors.append(masked_values(reading.file_error.as_dict()))

    def _consume(
        self,
        run: _Run,
        items: Iterable[ProviderRecord | LineError],
        default_batch: Callable[[], str | None],
        *,
        report: bool,
    ) -> None:
        """Match one file's rows, in file order, a chunk at a time; line errors are counted (and the first ones
        quoted) when the file is reported."""
        # A chunk's lookup runs on its own thread while the previous chunk is matched and the next one parsed: the
        # database works (on another core) while Python does. One thread, so the lookups run one at a time and in
        # order, and at most two chunks are held; the matcher is only ever used here, by this thread.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="settlement-lookup") as lookups:
            waiting: tuple[list[ProviderRecord], Future[Candidates]] | None = None
            chunk: list[ProviderRecord] = []
            for item in items:
                if isinstance(item, LineError):
                    if report:
                        run.line_error_count += 1
                        if len(run.line_errors) < MAX_LINE_ERRORS_SHOWN:
                            run.line_errors.append(masked_values(item.as_dict()))
                    continue
                chunk.append(item)
                if len(chunk) >= self._chunk:
                    looked_up = lookups.submit(self._candidates, run.provider, chunk)
                    if waiting is not None:
                        self._match(run, waiting[0], waiting[1].result(), default_batch(), report=report)
                    waiting, chunk = (chunk, looked_up), []
            if chunk:
                looked_up = lookups.submit(self._candidates, run.provider, chunk)
                if waiting is not None:
                    self._match(run, waiting[0], waiting[1].result(), default_batch(), report=report)
                waiting = (chunk, looked_up)
            if waiting is not None:
                self._match(run, waiting[0], waiting[1].result(), default_batch(), report=report)

    def _finish_staged(self, run: _Run, staged: StagedRun, period: SettlementPeriod) -> None:
        """A staged run's files in order: the lines the database left through the matcher, its matched sums into
        the totals and payouts, then the period's completed executions that no line listed."""
        for file, lines in staged.left_over():
            counted = ParseResult(file.source, run.provider)
            self._consume(run, counted.track(file.items(lines)), file.batch_when_empty, report=file.report)
            if file.report:
                for sums in file.matched:
                    run.totals.add_matched(sums)
                    for batch, (net, items) in sums.batches.items():
                        run.payouts.add_items(batch or file.default_batch, sums.currency, net, items)
                    run.matcher.matched += sums.items
            run.reads.append(
                FileRead(
                    source=file.source,
                    sha256=file.sha256,
                    format=ADYEN_SDR,
                    records=counted.records + file.matched_items,
                    line_errors=counted.line_errors,
                )
            )
        staging = staged.staging
        for currency, amount in staging.expected(run.provider, period.start_at, period.end_at).items():
            run.totals.expect(currency, amount)
        listed = run.matcher.is_listed
        for execution in staging.unmatched(staged.run, run.provider, period.start_at, period.end_at):
            if not listed(execution):
                run.spool.add(_missing(run.provider, execution))

    def _candidates(self, provider: str, chunk: Sequence[ProviderRecord]) -> Candidates:
        """The executions a chunk's rows name: by reference, then by the execution id the rows echo (the fallback)."""
        references = references_needed(chunk)
        executions = self._lookup.find(provider, references, ()) if references else []
        found = Candidates.of(executions)
        fallback = ids_needed(chunk, found)
        if fallback:
            found = Candidates.of([*executions, *self._lookup.find(provider, (), fallback)])
        return found

    def _match(
        self,
        run: _Run,
        chunk: Sequence[ProviderRecord],
        found: Candidates,
        default_batch: str | None,
        *,
        report: bool,
    ) -> None:
        classify, add_total, add_to_payout, spool = run.matcher.classify, run.totals.add, run.payouts.add, run.spool
        for record in chunk:
            batch = record.batch or default_batch
            finding = classify(record, found, batch=batch, report=report)
            if not report:
                continue
            add_total(record)
            add_to_payout(record, batch)
            if finding is not None:
                spool.add(finding)

    def _missing_from_file(self, run: _Run, period: SettlementPeriod) -> None:
        expected: dict[str, int] = {}
        for page in _read_ahead(self._lookup.completed(run.provider, period.start_at, period.end_at)):
            for execution in run.matcher.unlisted(page, expected):
                run.spool.add(_missing(run.provider, execution))
        for currency, amount in expected.items():
            run.totals.expect(currency, amount)


def _read_ahead(pages: Iterator[list[OurExecution]]) -> Iterator[list[OurExecution]]:
    """`pages`, the next one read on another thread while the caller works on this one (one page ahead)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="settlement-scan") as reader:
        ahead = reader.submit(next, pages, None)
        while (page := ahead.result()) is not None:
            ahead = reader.submit(next, pages, None)
            yield page


def _missing(provider: str, execution: OurExecution) -> Finding:
    money = Money(execution.amount, execution.currency).format()
    return Finding(
        discrepancy_class=DiscrepancyClass.MISSING_FROM_FILE,
        source=None,
        line_number=None,
        provider_reference=execution.provider_reference,
        record_kind=None,
        tenant_id=execution.tenant_id,
        execution_id=execution.execution_id,
        expected_amount=execution.amount,
        expected_currency=execution.currency,
        reported_amount=None,
        reported_currency=None,
        detail=f"completed {money}; no {provider} file listed it",
    )
