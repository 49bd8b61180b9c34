"""Provider settlement files: where they live, what one row means, and a strict parser (format: docs/settlement.md).

One file per provider and day, `settlements/<provider>/<YYYY-MM-DD>.csv`, UTF-8 CSV with a header row:

    provider_reference,amount,currency,status,settled_at,fee
    sbx_0123456789abcdef01234567,1999,EUR,paid,2026-04-10T09:15:00Z,29

Money is an integer of minor units, never a decimal: "12.50" is refused, as is "1e3". A row that does not parse
is reported with its line number and the file's other rows are still read; nothing is ever skipped silently.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Final

from billing.domain.money import MAX_AMOUNT_MINOR, is_known_currency

SETTLEMENT_PREFIX: Final = "settlements/"
REQUIRED_COLUMNS: Final = ("provider_reference", "amount", "currency", "status", "settled_at")
FEE_COLUMN: Final = "fee"
HEADER: Final = (*REQUIRED_COLUMNS, FEE_COLUMN)

# Provider names are folder names: lower case, no dots or slashes, so a key can never escape its folder.
_PROVIDER: Final = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
# Real references (Stripe ch_/pi_, Adyen pspReference, GoCardless PM..., sandbox sbx_) all fit. Starting with a
# letter or digit also keeps a reference from being read as a formula when the CSV report is opened in a spreadsheet.
_REFERENCE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Digits only, no sign and no leading zeros: "0199" is more likely a corrupted "199" or "1.99" than an amount.
_MINOR_UNITS: Final = re.compile(r"^(0|[1-9][0-9]*)$")
_KEY: Final = re.compile(r"^settlements/(?P<provider>[^/]+)/(?P<day>\d{4}-\d{2}-\d{2})\.csv$")
# Error messages quote the offending value, bounded so a corrupt file cannot flood the report.
_SHOWN: Final = 40


class SettlementStatus(StrEnum):
    """What the provider says happened to the money of one item."""

    PAID = "paid"  # the payment settled to us
    FAILED = "failed"  # the payment did not settle (debit returned, declined at settlement)
    REFUNDED = "refunded"  # money we returned to the customer
    CHARGEBACK = "chargeback"  # money the customer's bank took back


@dataclass(frozen=True, slots=True)
class SettlementLine:
    """One settled item of a provider's file. `amount` and `fee` are integer minor units of `currency`."""

    provider: str
    day: date
    source: str  # the object key the line came from
    line_number: int  # 1-based physical line of the file (the header is line 1)
    provider_reference: str
    amount: int
    currency: str
    status: SettlementStatus
    settled_at: datetime
    fee: int | None = None


@dataclass(frozen=True, slots=True)
class FileError:
    """A file, or one row of it, that could not be read; `line` is None when the whole file is unreadable."""

    source: str
    line: int | None
    message: str

    def as_dict(self) -> dict[str, str | int | None]:
        return {"source": self.source, "line": self.line, "message": self.message}


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """What a file held: every row that parsed, and an error for every row that did not."""

    provider: str
    day: date
    source: str
    lines: tuple[SettlementLine, ...]
    errors: tuple[FileError, ...]


def is_valid_provider(provider: str) -> bool:
    return _PROVIDER.fullmatch(provider) is not None


def settlement_file_key(provider: str, day: date) -> str:
    """settlements/<provider>/<YYYY-MM-DD>.csv; ValueError for a provider name that is not a plain folder name."""
    if not is_valid_provider(provider):
        raise ValueError(f"invalid provider name {provider[:_SHOWN]!r}")
    return f"{SETTLEMENT_PREFIX}{provider}/{day.isoformat()}.csv"


def parse_settlement_key(key: str) -> tuple[str, date] | None:
    """(provider, day) of a settlement file key, or None if the key is not one."""
    found = _KEY.fullmatch(key)
    if found is None or not is_valid_provider(found["provider"]):
        return None
    try:
        return found["provider"], date.fromisoformat(found["day"])
    except ValueError:
        return None


class SettlementRowInvalid(ValueError):
    """One field of one row is wrong; the message names the field."""


def parse_settlement_file(content: bytes, *, provider: str, day: date, source: str) -> ParsedFile:
    """Parse a settlement file strictly: header exactly as documented, every row complete and well-formed."""
    lines: list[SettlementLine] = []
    errors: list[FileError] = []

    def result() -> ParsedFile:
        return ParsedFile(provider, day, source, tuple(lines), tuple(errors))

    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark; it is not part of the first column's name.
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        errors.append(FileError(source, None, f"not UTF-8 (byte {exc.start})"))
        return result()
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            errors.append(FileError(source, None, "empty file: the header row is missing"))
            return result()
        has_fee = _check_header(header)
        if has_fee is None:
            expected = ",".join(REQUIRED_COLUMNS) + f"[,{FEE_COLUMN}]"
            shown = ",".join(header)[: _SHOWN * 2]
            errors.append(FileError(source, 1, f"header must be {expected}, found {shown!r}"))
            return result()
        width = len(HEADER) if has_fee else len(REQUIRED_COLUMNS)
        previous_end = reader.line_num
        for row in reader:
            # A row's first physical line; quoted fields may span lines, so line_num alone would name its last.
            line_number = previous_end + 1
            previous_end = reader.line_num
            try:
                lines.append(
                    parse_settlement_row(row, width, provider=provider, day=day, source=source, line=line_number)
                )
            except SettlementRowInvalid as exc:
                errors.append(FileError(source, line_number, str(exc)))
    except csv.Error as exc:
        # Broken quoting: the reader cannot tell where rows end, so nothing after this point can be trusted.
        errors.append(FileError(source, reader.line_num, f"unreadable CSV, rest of file not read: {exc}"))
    return result()


def _check_header(header: Sequence[str]) -> bool | None:
    """True/False: valid header with/without the fee column; None: not a valid header."""
    columns = tuple(header)
    if columns == HEADER:
        return True
    if columns == REQUIRED_COLUMNS:
        return False
    return None


def parse_settlement_row(
    row: Sequence[str], width: int, *, provider: str, day: date | None, source: str, line: int
) -> SettlementLine:
    """One data row of the format (`width` 5 or 6 fields); SettlementRowInvalid naming the field at fault.

    `day` is the file's day, which settled_at must fall on (UTC); None when the file's name carries no day (a file
    handed to the CLI), and the line's own UTC day is taken.
    """
    if not row:
        raise SettlementRowInvalid("blank line")
    if len(row) != width:
        raise SettlementRowInvalid(f"expected {width} fields, found {len(row)}")
    reference, amount_text, currency, status_text, settled_text = row[:5]
    fee_text = row[5] if width == len(HEADER) else ""
    if _REFERENCE.fullmatch(reference) is None:
        raise SettlementRowInvalid(f"provider_reference {reference[:_SHOWN]!r} is not 1-128 of [A-Za-z0-9_.:-]")
    amount = _minor_units("amount", amount_text)
    if amount == 0:
        raise SettlementRowInvalid("amount must be positive")
    if not is_known_currency(currency):
        raise SettlementRowInvalid(f"currency {currency[:_SHOWN]!r} is not an ISO 4217 code in upper case")
    try:
        status = SettlementStatus(status_text)
    except ValueError:
        allowed = "/".join(SettlementStatus)
        raise SettlementRowInvalid(f"status {status_text[:_SHOWN]!r} is not one of {allowed}") from None
    settled_at = _timestamp(settled_text)
    if day is None:
        day = settled_at.astimezone(UTC).date()
    elif settled_at.astimezone(UTC).date() != day:
        raise SettlementRowInvalid(f"settled_at {settled_text} is not on the file's day {day.isoformat()} (UTC)")
    fee = _minor_units("fee", fee_text) if fee_text != "" else None
    return SettlementLine(
        provider=provider,
        day=day,
        source=source,
        line_number=line,
        provider_reference=reference,
        amount=amount,
        currency=currency,
        status=status,
        settled_at=settled_at,
        fee=fee,
    )


def _minor_units(field: str, text: str) -> int:
    if _MINOR_UNITS.fullmatch(text) is None:
        raise SettlementRowInvalid(
            f"{field} {text[:_SHOWN]!r} is not an integer of minor units (digits only, e.g. 1999)"
        )
    value = int(text)
    if value > MAX_AMOUNT_MINOR:
        raise SettlementRowInvalid(f"{field} {text[:_SHOWN]} exceeds {MAX_AMOUNT_MINOR}")
    return value


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SettlementRowInvalid(f"settled_at {text[:_SHOWN]!r} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        # A time without an offset is ambiguous by up to a day: it could land the item in the wrong report.
        raise SettlementRowInvalid(f"settled_at {text[:_SHOWN]!r} has no UTC offset (write e.g. 2026-04-10T09:15:00Z)")
    return value


def render_settlement_file(lines: Iterable[SettlementLine]) -> bytes:
    """The file holding `lines`, in the documented format (with the fee column; an absent fee is left empty)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for line in lines:
        writer.writerow(
            (
                line.provider_reference,
                line.amount,
                line.currency,
                line.status.value,
                line.settled_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                "" if line.fee is None else line.fee,
            )
        )
    return buffer.getvalue().encode()
