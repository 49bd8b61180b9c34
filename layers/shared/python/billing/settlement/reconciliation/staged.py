"""The fast path of a report run: its files staged in the database, where one statement decides the exact matches.

Parsing and matching a million rows one at a time in Python takes minutes; most rows of a healthy file are a
payment settled exactly as we recorded it, and those the database can decide for the whole file at once. So a
run whose files are all Adyen Settlement Detail Reports of a plain shape is:

1. downloaded to local disk (hashed on the way: the report id needs every byte), read by the Adyen parser itself
   line by line, and staged with COPY (SettlementStaging.stage): every line's number and Psp Reference, and for a
   line the parser read as a settled item in one currency its amounts, fees, payment method and batch (never the
   line's text: the lines left to Python are read again from the local copy);
2. decided: one statement records every settled item that matches exactly and returns their sums per file and
   currency (billing.db.settlement_staging states the conditions: those of Matcher._payment_agrees, for a
   reference no other line of the run carries);
3. finished in Python, file by file in order: every other line goes through the parser and the Matcher exactly
   as in a run without staging (and is usually the few rows that have something to explain), the matched sums
   join the totals and payouts, and the period's completed executions no line listed are missing_from_file.

The report is the same as the one the row-by-row path builds from the same files, line for line
(tests/integration/test_settlement_staging.py holds the two side by side). A run with any file this path does not
read the way the csv module would (another format, a header that is not one line, a quoted field across lines, a
carriage return or NUL inside a line, bytes that are not UTF-8, a missing column) is not staged at all: the
row-by-row path reads it and says what is wrong where.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from uuid import UUID

from billing.settlement.formats import adyen_sdr
from billing.settlement.formats.adyen_sdr import AdyenSettlementDetailReport
from billing.settlement.formats.records import (
    Columns,
    FileErrorRaised,
    LineError,
    ProviderRecord,
    RecordKind,
    RowParser,
    read_columns,
    read_row,
)
from billing.settlement.reconciliation.findings import masked
from billing.settlement.reconciliation.ports import FEE_TYPES, MatchedSums, SettlementStaging, StagedLine
from billing.settlement.reconciliation.reading import SettlementFile, adyen_batch_of, choose_format
from billing.settlement.reconciliation.streams import file_chunks, text_lines


class NotStaged(Exception):
    """A file the fast path does not read exactly as the parser would; the run goes row by row instead."""


@dataclass(slots=True)
class StagedFile:
    """One staged file: how it is reported, and how its left-over lines are read."""

    index: int
    source: str
    sha256: str
    report: bool
    columns: Columns
    parse_row: RowParser
    default_batch: str
    path: Path  # the local copy, read again for the lines left to the parser; deleted with the run
    matched: list[MatchedSums] = field(default_factory=list)

    def batch_when_empty(self) -> str | None:
        """The batch of a row whose Batch Number is empty (the file's name gives it)."""
        return self.default_batch

    @property
    def matched_items(self) -> int:
        return sum(sums.items for sums in self.matched)

    def items(self, numbers: Iterator[int]) -> Iterator[ProviderRecord | LineError]:
        """The file's lines of these numbers (ascending) as the parser reads them, from the local copy."""
        width, source, parse_row = len(self.columns.names), self.source, self.parse_row
        wanted = next(numbers, None)
        with self.path.open("rb") as stream:
            lines = text_lines(file_chunks(stream))
            next(lines, None)  # the header
            for number, text in enumerate(lines, start=2):
                if number != wanted:
                    continue
                yield read_row(_cells(_without_end(text)), number, source=source, width=width, parse_row=parse_row)
                wanted = next(numbers, None)
                if wanted is None:
                    return


@dataclass(slots=True)
class StagedRun:
    """A run's staged files (look-back first) and the lines the database left to the parser."""

    run: UUID
    staging: SettlementStaging
    files: list[StagedFile]

    def left_over(self) -> Iterator[tuple[StagedFile, Iterator[int]]]:
        """Each file in order with its left-over line numbers (file order, then line order, as staged)."""
        groups = groupby(self.staging.left_over(self.run), key=itemgetter(0))
        group = next(groups, None)
        for file in self.files:
            if group is None or group[0] != file.index:
                yield file, iter(())
                continue
            yield file, (number for _, number in group[1])
            group = next(groups, None)

    def discard(self) -> None:
        try:
            self.staging.discard(self.run)
        finally:
            for file in self.files:
                file.path.unlink(missing_ok=True)


def stage_run(
    staging: SettlementStaging,
    provider: str,
    *,
    lookback: Sequence[SettlementFile],
    files: Sequence[SettlementFile],
    spool_directory: str | None = None,
) -> StagedRun | None:
    """The run staged and decided, or None (nothing staged is left behind) when a file is not for this path."""
    if provider != AdyenSettlementDetailReport.provider or not files:
        return None
    run = staging.begin(provider)
    staged: list[StagedFile] = []
    try:
        for index, (file, report) in enumerate([*((f, False) for f in lookback), *((f, True) for f in files)]):
            staged.append(_stage_file(staging, run, index, file, report, provider, spool_directory))
        for sums in staging.decide(run, provider):
            staged[sums.file].matched.append(sums)
    except NotStaged:
        StagedRun(run, staging, staged).discard()
        return None
    except BaseException:
        StagedRun(run, staging, staged).discard()
        raise
    return StagedRun(run, staging, staged)


def _stage_file(
    staging: SettlementStaging,
    run: UUID,
    index: int,
    file: SettlementFile,
    report: bool,
    provider: str,
    spool_directory: str | None,
) -> StagedFile:
    source = masked(file.source) or file.source
    handle, name = tempfile.mkstemp(dir=spool_directory, prefix="settlement-file-")
    path = Path(name)
    try:
        # Downloaded before any transaction: no database work waits on the provider file's store.
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as local:
            for chunk in file.open():
                digest.update(chunk)
                local.write(chunk)
        with path.open("rb") as stream:
            lines = text_lines(file_chunks(stream))
            try:
                columns = _header(next(lines, None), provider, source)
                parse_row = AdyenSettlementDetailReport.row_parser(columns, source=source)
                staging.stage(run, index, _data_lines(lines, columns, parse_row, source))
            except UnicodeDecodeError:
                raise NotStaged("not UTF-8") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StagedFile(
        index=index,
        source=source,
        sha256=digest.hexdigest(),
        report=report,
        columns=columns,
        parse_row=parse_row,
        default_batch=adyen_batch_of(source),
        path=path,
    )


def _header(line: str | None, provider: str, source: str) -> Columns:
    if line is None or line.count('"') % 2:
        raise NotStaged("no header, or one across lines")
    try:
        header = next(csv.reader([line], strict=True), None)
    except csv.Error:
        raise NotStaged("unreadable header") from None
    if header is None or choose_format(header, provider) is not AdyenSettlementDetailReport:
        raise NotStaged("not a Settlement Detail Report")
    try:
        return read_columns(header, source=source, required=adyen_sdr.REQUIRED_COLUMNS)
    except FileErrorRaised:
        raise NotStaged("a column is missing or named twice") from None


def _data_lines(lines: Iterator[str], columns: Columns, parse_row: RowParser, source: str) -> Iterator[StagedLine]:
    """Each data line as the parser reads it: a settled item in one currency with its figures, anything else (other
    types, FX, bad lines) with its number and Psp Reference only, for the Python matcher after the database."""
    width = len(columns.names)
    psp_at = columns.position.get(adyen_sdr.PSP_REFERENCE)
    settled = RecordKind.SETTLED
    # Payment methods and batches are a handful of labels; one that could hold a card number is not written to the
    # database (its line is left to the Python matcher, whose findings mask it). Each label is checked once.
    plain: dict[str | None, bool] = {}

    def storable(label: str | None) -> bool:
        known = plain.get(label)
        if known is None:
            known = plain[label] = masked(label) == label
        return known

    for number, text in enumerate(lines, start=2):
        cells = _cells(_without_end(text))
        psp = cells[psp_at] if psp_at is not None and psp_at < len(cells) else ""
        item = read_row(cells, number, source=source, width=width, parse_row=parse_row)
        if isinstance(item, LineError) or item.kind is not settled or item.gross_currency != item.net_currency:
            yield StagedLine(number, psp)
            continue
        method, batch = item.payment_method, item.batch
        if item.provider_reference is None or not storable(method) or not storable(batch):
            yield StagedLine(number, psp)
            continue
        fee = item.fees.get
        yield StagedLine(
            number,
            psp,
            item.gross_amount,
            item.net_amount,
            fee(FEE_TYPES[0], 0),
            fee(FEE_TYPES[1], 0),
            fee(FEE_TYPES[2], 0),
            fee(FEE_TYPES[3], 0),
            item.net_currency,
            method,
            batch,
        )


def _without_end(text: str) -> str:
    """A line without its end; NotStaged for a carriage return or NUL inside it (the csv module reads those
    otherwise than line by line)."""
    line = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if "\r" in line or "\x00" in line:
        raise NotStaged("a carriage return or NUL inside a line")
    return line


def _cells(line: str) -> list[str]:
    """The line's cells as the csv module reads them: its commas' pieces when it has no quote."""
    if '"' not in line:
        return line.split(",") if line else []
    if line.count('"') % 2:
        raise NotStaged("a quoted field across lines")
    try:
        return next(csv.reader([line], strict=True), [])
    except csv.Error:
        raise NotStaged("unreadable quoting") from None
