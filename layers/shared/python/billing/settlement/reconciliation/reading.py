"""One settlement file read as records: its format chosen from its header and folder, its bytes hashed as they pass.

A file that fits no format, has no header or misses a column is a FileError (reported, never raised to the caller);
a bad row is a LineError and the rows after it are still read. Either way the file is read to its end, because its
SHA-256 names the report (outcome.report_id_for): a corrected file is a new report, the same bytes the same one.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

from billing.settlement.formats.adyen_sdr import AdyenSettlementDetailReport
from billing.settlement.formats.detect import NO_FORMAT, ProviderFormat, format_for, peek_header
from billing.settlement.formats.records import FileError, FileErrorRaised, LineError, ParseResult, ProviderRecord
from billing.settlement.formats.sandbox_csv import SandboxSettlementCsv
from billing.settlement.formats.stripe_itemized import StripeItemizedPayoutReconciliation
from billing.settlement.outcome import FileRead
from billing.settlement.reconciliation.findings import masked
from billing.settlement.reconciliation.streams import text_lines

ADYEN_SDR: Final = "adyen_sdr"
STRIPE_ITEMIZED: Final = "stripe_itemized"
SANDBOX_CSV: Final = "sandbox_csv"
UNREAD: Final = "unrecognised"
_FORMAT_NAMES: Final = {AdyenSettlementDetailReport: ADYEN_SDR, StripeItemizedPayoutReconciliation: STRIPE_ITEMIZED}
# settlement_detail_report_batch_42.csv: Adyen names the batch in the file and may leave its rows' column empty.
_ADYEN_BATCH_IN_NAME: Final = re.compile(r"batch_([0-9]{1,18})(?:\D|$)")

Opener = Callable[[], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class SettlementFile:
    """A file to read: how it is named in the report, how to stream its bytes, and its day if its name has one."""

    source: str
    open: Opener
    day: date | None = None


def adyen_batch_of(source: str) -> str:
    """The batch an Adyen file's rows belong to when their Batch Number is empty: the one its name gives, else the
    name itself."""
    name = source.rsplit("/", 1)[-1]
    found = _ADYEN_BATCH_IN_NAME.search(name)
    return found[1] if found else name


Chosen = ProviderFormat | type[SandboxSettlementCsv]


def choose_format(header: Sequence[str], provider: str) -> Chosen | FileError:
    """The parser for `header` in `provider`'s folder, or why there is none (as a FileError without a source)."""
    # Our own CSV may sit in any provider's folder: it is the engine's normalised format, not a provider's.
    if SandboxSettlementCsv.recognises(header):
        return SandboxSettlementCsv
    chosen = format_for(header, provider_hint=provider)
    if chosen is not None:
        return chosen
    other = format_for(header, provider_hint=None)
    if other is not None:
        return FileError("", f"{NO_FORMAT} of {provider}: it is a {other.provider} report")
    return FileError("", NO_FORMAT)


class FileReading:
    """Iterate `items()` once; afterwards `read()` and `file_error` describe the file."""

    def __init__(self, file: SettlementFile, provider: str) -> None:
        self._file = file
        self._provider = provider
        self._digest = hashlib.sha256()
        self.format = UNREAD
        self.file_error: FileError | None = None
        self._counts = ParseResult(self.source, provider)
        self.default_batch: str | None = None

    @property
    def source(self) -> str:
        """The name the file is reported under: its key, with anything that looks like a card number masked."""
        return masked(self._file.source) or self._file.source

    def items(self) -> Iterator[ProviderRecord | LineError]:
        source = self.source
        chunks = self._hashed(iter(self._file.open()))
        try:
            try:
                header, lines = peek_header(text_lines(chunks))
            except csv.Error as exc:
                raise FileErrorRaised(FileError(source, f"unreadable CSV header: {exc}")) from None
            except UnicodeDecodeError as exc:
                raise FileErrorRaised(FileError(source, f"not UTF-8 (byte {exc.start})")) from None
            if header is None or not any(name.strip() for name in header):
                raise FileErrorRaised(FileError(source, "no header: the file is empty"))
            chosen = choose_format(header, self._provider)
            if isinstance(chosen, FileError):
                raise FileErrorRaised(FileError(source, chosen.reason))
            parsed: Iterator[ProviderRecord | LineError]
            if issubclass(chosen, SandboxSettlementCsv):
                self.format = SANDBOX_CSV
                parsed = SandboxSettlementCsv.parse(lines, source=source, provider=self._provider, day=self._file.day)
            else:
                self.format = _FORMAT_NAMES[chosen]
                parsed = chosen.parse(lines, source=source)
                if chosen is AdyenSettlementDetailReport:
                    self.default_batch = adyen_batch_of(source)
            yield from self._counts.track(parsed)
        except FileErrorRaised as exc:
            self.file_error = exc.error
        finally:
            # The digest covers every byte, also of a file that stopped being parsed early.
            for _ in chunks:
                pass

    def read(self) -> FileRead:
        return FileRead(
            source=self.source,
            sha256=self._digest.hexdigest(),
            format=self.format,
            records=self._counts.records,
            line_errors=self._counts.line_errors,
        )

    def _hashed(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._digest.update(chunk)
            yield chunk
