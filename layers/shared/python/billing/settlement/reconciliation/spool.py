"""Findings kept on local disk between the pass over the files and the writes, one compressed file per class.

The report's summary (its counts, its id) is known only once every file has been read, yet the store, the JSON,
the CSV and the HTML each want the findings after it, worst class first. Holding a million findings in memory would
take most of a Lambda's; a spool in its /tmp (gzip level 1: a few bytes a finding, since rows repeat their shape)
takes a few MB, and reading it back is a stream. One file per class gives "worst first" without a sort, each class
in the order it was found (file by file, line by line), which is deterministic for the same files.
"""

from __future__ import annotations

import gzip
import marshal
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final
from uuid import UUID

from billing.settlement.outcome import CLASS_SEVERITY, Discrepancy, DiscrepancyClass
from billing.settlement.reconciliation.findings import Finding

# Findings per marshal frame: one call per frame instead of one per finding (a thousand times fewer).
_FRAME: Final = 1024
_LENGTH_BYTES: Final = 4


class FindingSpool:
    """Append findings during the pass, read them back any number of times after `seal()`."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="settlement-spool-", dir=directory))
        self._writers: dict[DiscrepancyClass, gzip.GzipFile] = {}
        self._pending: dict[DiscrepancyClass, list[tuple[object, ...]]] = {}
        self._counts: dict[DiscrepancyClass, int] = {}
        self._amounts: dict[DiscrepancyClass, dict[str, int]] = {}
        self._sealed = False

    def __enter__(self) -> FindingSpool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def counts(self) -> dict[DiscrepancyClass, int]:
        return dict(self._counts)

    @property
    def amounts(self) -> dict[DiscrepancyClass, dict[str, int]]:
        """Per class and currency, the findings' amounts in minor units: the provider's figure where there is one."""
        return {klass: dict(sums) for klass, sums in self._amounts.items()}

    def add(self, finding: Finding) -> None:
        if self._sealed:
            raise RuntimeError("the spool is sealed: findings are read back now")
        klass = finding.discrepancy_class
        if klass is DiscrepancyClass.MATCHED:
            raise ValueError("matched items are counted, not spooled")
        pending = self._pending.setdefault(klass, [])
        pending.append(finding.as_row())
        self._counts[klass] = self._counts.get(klass, 0) + 1
        amount, currency = finding.reported_amount, finding.reported_currency
        if amount is None or currency is None:
            amount, currency = finding.expected_amount, finding.expected_currency
        if amount is not None and currency is not None:
            sums = self._amounts.setdefault(klass, {})
            sums[currency] = sums.get(currency, 0) + amount
        if len(pending) >= _FRAME:
            self._flush(klass)

    def seal(self) -> None:
        """No more findings: write what is pending and close the writers."""
        if self._sealed:
            return
        for klass in list(self._pending):
            self._flush(klass)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._sealed = True

    def findings(self) -> Iterator[Finding]:
        """Every finding, worst class first (outcome.CLASS_SEVERITY), each class in the order it was found."""
        self.seal()
        for klass in CLASS_SEVERITY:
            if not self._counts.get(klass):
                continue
            with gzip.open(self._path(klass), "rb") as reader:
                while header := reader.read(_LENGTH_BYTES):
                    frame = marshal.loads(reader.read(int.from_bytes(header, "little")))  # noqa: S302 - our own file
                    for row in frame:
                        yield Finding.from_row(row)

    def discrepancies(self, report_id: UUID) -> Iterator[Discrepancy]:
        for finding in self.findings():
            yield finding.discrepancy(report_id)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _flush(self, klass: DiscrepancyClass) -> None:
        pending = self._pending.pop(klass, [])
        if not pending:
            return
        writer = self._writers.get(klass)
        if writer is None:
            # Open for the whole pass (one writer per class); seal() and close() close it.
            writer = self._writers[klass] = gzip.open(self._path(klass), "wb", compresslevel=1)  # noqa: SIM115
        data = marshal.dumps(pending)
        writer.write(len(data).to_bytes(_LENGTH_BYTES, "little"))
        writer.write(data)

    def _path(self, klass: DiscrepancyClass) -> Path:
        return self._directory / f"{klass.value}.marshal.gz"
