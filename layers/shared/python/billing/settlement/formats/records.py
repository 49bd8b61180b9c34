"""The common record both provider parsers emit, their errors, and the CSV plumbing they share.

A parser yields, per data row, either a ProviderRecord or a LineError (with the row's 1-based physical line number;
the header is line 1), so a bad row is reported and the rows after it are still read. Problems with the file as a
whole (no header, missing or duplicate columns) raise FileErrorRaised before any row is yielded.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, NamedTuple

# Error messages quote the offending value, bounded so a corrupt file cannot flood the report.
SHOWN_MAX: Final = 40
_BOM: Final = "\ufeff"


class RecordKind(StrEnum):
    """What one row of a provider's report is, in our words; the provider's own word stays in raw_type."""

    SETTLED = "settled"  # a payment settled to us (Adyen Settled, Stripe charge)
    # A payment that did not settle (a returned debit): only the engine's own sandbox CSV lists these ("failed").
    FAILED = "failed"
    REFUNDED = "refunded"  # money returned to the customer
    CHARGEBACK = "chargeback"  # money the customer's bank took back (Stripe dispute)
    CHARGEBACK_REVERSED = "chargeback_reversed"  # a chargeback won back (Stripe dispute_reversal)
    SECOND_CHARGEBACK = "second_chargeback"
    FEE = "fee"  # a fee booked on its own row (Adyen Fee, Stripe fee)
    PAYOUT = "payout"  # the transfer of a batch to the bank account (Adyen MerchantPayout, Stripe payout)
    BALANCE_TRANSFER = "balance_transfer"
    DEPOSIT_CORRECTION = "deposit_correction"
    INVOICE_DEDUCTION = "invoice_deduction"
    PAYMENT_COST = "payment_cost"
    ADJUSTMENT = "adjustment"  # Stripe other_adjustment and payout_reversal
    OTHER = "other"  # any type we do not map: kept and reported, never dropped


class ProviderRecord(NamedTuple):
    """One row of a provider report. Amounts are signed integer minor units: positive is money to us.

    gross is what the row moved before fees, in gross_currency (Adyen: the payment's currency; Stripe: the balance
    currency, with the customer's own amount in customer_facing_*); net is what it moved in the batch's currency
    after fees. A row that moves no gross amount (Adyen Fee, MerchantPayout) has gross 0 in the net currency.

    A named tuple, immutable like the frozen dataclass it replaced: a file has a million rows, and building one
    costs a tenth of a frozen dataclass's field-by-field __init__ (the parsers build it from one positional tuple).
    """

    provider: str  # "adyen" / "stripe"
    source: str  # the file name or object key the row came from
    line_number: int  # 1-based physical line of the row's first line; the header is line 1
    kind: RecordKind
    raw_type: str  # the provider's own type or reporting category, verbatim
    provider_reference: str | None  # Adyen Psp Reference / Stripe payment_intent_id
    secondary_reference: str | None  # Adyen Modification Reference / Stripe charge_id, else source_id
    merchant_reference: str | None  # Adyen Merchant Reference / Stripe payment_metadata[execution_id]
    payment_method: str | None
    created_at: datetime  # in UTC (tzinfo=UTC), whatever zone the provider wrote it in
    gross_amount: int
    gross_currency: str
    net_amount: int
    net_currency: str
    fees: Mapping[str, int]  # fee type -> minor units of net_currency, as the provider reports them (cost > 0)
    batch: str | None  # Adyen Batch Number / Stripe automatic_payout_id
    exchange_rate: str | None  # verbatim text, never a float
    metadata: Mapping[str, str]  # Stripe payment_metadata[<key>] by key; Adyen: modification_merchant_reference
    merchant_account: str | None = None  # Adyen Merchant Account (one report may hold several); Stripe: None
    customer_facing_amount: int | None = None  # Stripe: the charge/refund/dispute amount as the customer saw it
    customer_facing_currency: str | None = None


@dataclass(frozen=True, slots=True)
class LineError:
    """A row that could not be read; `field` is the column at fault (None for the row as a whole)."""

    source: str
    line_number: int
    field: str | None
    reason: str
    shown: str | None  # the offending value, at most SHOWN_MAX characters, or None

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "source": self.source,
            "line": self.line_number,
            "field": self.field,
            "reason": self.reason,
            "shown": self.shown,
        }


@dataclass(frozen=True, slots=True)
class FileError:
    """A file that cannot be read at all, e.g. "missing required column 'Type'" or "header fits no known format"."""

    source: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


class FileErrorRaised(Exception):
    """Raised by a parser, before it yields any row, when the file as a whole cannot be read."""

    def __init__(self, error: FileError) -> None:
        self.error = error
        super().__init__(f"{error.source}: {error.reason}")


@dataclass
class ParseResult:
    """Running counts of one file's parse. The rows themselves are streamed to the caller, never kept here."""

    source: str
    provider: str
    records: int = 0
    line_errors: int = 0
    file_error: FileError | None = None

    def track(self, items: Iterable[ProviderRecord | LineError]) -> Iterator[ProviderRecord | LineError]:
        """Pass `items` through unchanged, counting them; a FileErrorRaised is recorded here and re-raised."""
        try:
            for item in items:
                if isinstance(item, LineError):
                    self.line_errors += 1
                else:
                    self.records += 1
                yield item
        except FileErrorRaised as exc:
            self.file_error = exc.error
            raise


def shown(text: str) -> str:
    return text[:SHOWN_MAX]


def normalise_header(header: Sequence[str]) -> tuple[str, ...]:
    """Column names as compared: surrounding whitespace stripped, and a byte-order mark on the first one."""
    names = [name.strip() for name in header]
    if names:
        names[0] = names[0].removeprefix(_BOM).strip()
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Columns:
    """Where each column sits in this file's header; rows are always read by name through this."""

    names: tuple[str, ...]
    position: Mapping[str, int]

    def has(self, name: str) -> bool:
        return name in self.position


def read_columns(header: Sequence[str], *, source: str, required: Iterable[str]) -> Columns:
    """The header's columns by name; FileErrorRaised for duplicate names or missing required columns."""
    names = normalise_header(header)
    position: dict[str, int] = {}
    duplicates: list[str] = []
    for index, name in enumerate(names):
        if name in position:
            duplicates.append(name)
        position[name] = index
    if duplicates:
        listed = ", ".join(repr(shown(name)) for name in dict.fromkeys(duplicates))
        raise FileErrorRaised(FileError(source, f"duplicate column name {listed}"))
    missing = [name for name in required if name not in position]
    if len(missing) == 1:
        raise FileErrorRaised(FileError(source, f"missing required column {missing[0]!r}"))
    if missing:
        raise FileErrorRaised(FileError(source, "missing required columns " + ", ".join(map(repr, missing))))
    return Columns(names, position)


# Reads one row (the csv module's own list, which the parser may extend) with its line number.
RowParser = Callable[[list[str], int], ProviderRecord]


class RowInvalid(ValueError):
    """One field of one row is wrong; becomes a LineError for that row."""

    def __init__(self, field: str | None, reason: str, text: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.shown = None if text is None else shown(text)
        super().__init__(reason)


def parse_rows(
    lines: Iterable[str],
    *,
    source: str,
    required: Iterable[str],
    bind: Callable[[Columns], RowParser],
) -> Iterator[ProviderRecord | LineError]:
    """Read `lines` as CSV lazily: header first, then one ProviderRecord or LineError per data row.

    `bind` is called once with the file's columns and returns the function that reads one row of that layout.
    csv.reader pulls one line at a time from the iterator, so a million-line stream is never held in memory.
    """
    reader = csv.reader(iter(lines), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FileErrorRaised(FileError(source, f"unreadable CSV header: {exc}")) from None
    except UnicodeDecodeError as exc:
        raise FileErrorRaised(FileError(source, f"not UTF-8 (byte {exc.start})")) from None
    if header is None or not any(name.strip() for name in header):
        raise FileErrorRaised(FileError(source, "no header: the file is empty"))
    columns = read_columns(header, source=source, required=required)
    parse_row = bind(columns)
    width = len(columns.names)
    previous_end = reader.line_num
    while True:
        try:
            row = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            # Broken quoting or bytes that are not text: where rows end is unknown from here, so nothing after it
            # can be trusted. Reported as the last error of the file, after every row that was read.
            kind = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "unreadable CSV"
            yield LineError(source, previous_end + 1, None, f"{kind}, rest of file not read: {exc}", None)
            return
        if row is None:
            return
        # A row's first physical line; a quoted field may span lines, so line_num alone would name its last.
        line_number = previous_end + 1
        previous_end = reader.line_num
        yield read_row(row, line_number, source=source, width=width, parse_row=parse_row)


def read_row(
    row: list[str], line_number: int, *, source: str, width: int, parse_row: RowParser
) -> ProviderRecord | LineError:
    """One data row's record, or the LineError saying what is wrong with it (blank, of another width, a bad cell)."""
    if not row:
        return LineError(source, line_number, None, "blank line", None)
    if len(row) != width:
        return LineError(source, line_number, None, f"expected {width} fields as in the header, found {len(row)}", None)
    try:
        return parse_row(row, line_number)
    except RowInvalid as exc:
        return LineError(source, line_number, exc.field, exc.reason, exc.shown)
