"""Adyen Settlement Detail Report (settlement_detail_report_batch_<n>.csv): one payout batch per file.

Layout followed: Adyen's documentation of the Settlement details report ("Settlement detail report structure",
docs.adyen.com, reporting/settlement-detail-report) and its sample rows. The classic layout has 30 columns:

    Company Account, Merchant Account, Psp Reference, Merchant Reference, Payment Method, Creation Date, TimeZone,
    Type, Modification Reference, Gross Currency, Gross Debit (GC), Gross Credit (GC), Exchange Rate, Net Currency,
    Net Debit (NC), Net Credit (NC), Commission (NC), Markup (NC), Scheme Fees (NC), Interchange (NC),
    Payment Method Variant, Modification Merchant Reference, Batch Number, Reserved4 ... Reserved10

Accounts can add, drop and reorder columns (Booking Date, Booking Date TimeZone, Metadata, balance-platform columns;
some omit Psp Reference), so columns are read by header name only and unknown ones are ignored. Amounts are unsigned
decimal strings in the major unit, in a debit or a credit column; an empty cell is zero. Creation Date is local
time in the TimeZone column, which Adyen fills with an abbreviation of the account's zone (CET, CEST, BST, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from operator import itemgetter
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.settlement.formats.amounts import REPORTABLE_CURRENCIES, AmountInvalid, to_minor_units
from billing.settlement.formats.records import (
    Columns,
    LineError,
    ProviderRecord,
    RecordKind,
    RowInvalid,
    RowParser,
    normalise_header,
    parse_rows,
)

PROVIDER: Final = "adyen"

COMPANY_ACCOUNT: Final = "Company Account"
MERCHANT_ACCOUNT: Final = "Merchant Account"
PSP_REFERENCE: Final = "Psp Reference"
MERCHANT_REFERENCE: Final = "Merchant Reference"
PAYMENT_METHOD: Final = "Payment Method"
CREATION_DATE: Final = "Creation Date"
TIME_ZONE: Final = "TimeZone"
TYPE: Final = "Type"
MODIFICATION_REFERENCE: Final = "Modification Reference"
MODIFICATION_MERCHANT_REFERENCE: Final = "Modification Merchant Reference"
GROSS_CURRENCY: Final = "Gross Currency"
GROSS_DEBIT: Final = "Gross Debit (GC)"
GROSS_CREDIT: Final = "Gross Credit (GC)"
EXCHANGE_RATE: Final = "Exchange Rate"
NET_CURRENCY: Final = "Net Currency"
NET_DEBIT: Final = "Net Debit (NC)"
NET_CREDIT: Final = "Net Credit (NC)"
BATCH_NUMBER: Final = "Batch Number"

REQUIRED_COLUMNS: Final = (
    MERCHANT_ACCOUNT,
    MERCHANT_REFERENCE,
    PAYMENT_METHOD,
    CREATION_DATE,
    TIME_ZONE,
    TYPE,
    GROSS_CURRENCY,
    GROSS_DEBIT,
    GROSS_CREDIT,
    NET_CURRENCY,
    NET_DEBIT,
    NET_CREDIT,
    BATCH_NUMBER,
)
# Fee columns, when present, by the fee type the report totals them under.
FEE_COLUMNS: Final = MappingProxyType(
    {
        "commission": "Commission (NC)",
        "markup": "Markup (NC)",
        "scheme_fees": "Scheme Fees (NC)",
        "interchange": "Interchange (NC)",
    }
)
CLASSIC_HEADER: Final = (
    COMPANY_ACCOUNT,
    MERCHANT_ACCOUNT,
    PSP_REFERENCE,
    MERCHANT_REFERENCE,
    PAYMENT_METHOD,
    CREATION_DATE,
    TIME_ZONE,
    TYPE,
    MODIFICATION_REFERENCE,
    GROSS_CURRENCY,
    GROSS_DEBIT,
    GROSS_CREDIT,
    EXCHANGE_RATE,
    NET_CURRENCY,
    NET_DEBIT,
    NET_CREDIT,
    *FEE_COLUMNS.values(),
    "Payment Method Variant",
    MODIFICATION_MERCHANT_REFERENCE,
    BATCH_NUMBER,
    *(f"Reserved{n}" for n in range(4, 11)),
)

TYPES: Final = MappingProxyType(
    {
        "Settled": RecordKind.SETTLED,
        "Refunded": RecordKind.REFUNDED,
        "Chargeback": RecordKind.CHARGEBACK,
        "ChargebackReversed": RecordKind.CHARGEBACK_REVERSED,
        "SecondChargeback": RecordKind.SECOND_CHARGEBACK,
        "Fee": RecordKind.FEE,
        "MerchantPayout": RecordKind.PAYOUT,
        "Balancetransfer": RecordKind.BALANCE_TRANSFER,
        "DepositCorrection": RecordKind.DEPOSIT_CORRECTION,
        "InvoiceDeduction": RecordKind.INVOICE_DEDUCTION,
        "PaymentCost": RecordKind.PAYMENT_COST,
    }
)

# Abbreviations Adyen writes in TimeZone, with their fixed offsets. Only unambiguous European ones are listed
# (BST is British Summer Time here, as in Adyen's own examples); anything else must be an IANA name, because a
# guessed offset would move items between days. IST, for one, is India, Ireland or Israel and is refused.
_ABBREVIATIONS: Final[Mapping[str, tzinfo]] = MappingProxyType(
    {
        "UTC": UTC,
        "GMT": UTC,
        "WET": UTC,
        "WEST": timezone(timedelta(hours=1), "WEST"),
        "BST": timezone(timedelta(hours=1), "BST"),
        "CET": timezone(timedelta(hours=1), "CET"),
        "CEST": timezone(timedelta(hours=2), "CEST"),
        "EET": timezone(timedelta(hours=2), "EET"),
        "EEST": timezone(timedelta(hours=3), "EEST"),
    }
)
_DATE_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
# Adyen batch numbers are positive integers; kept as text so the report shows them exactly as Adyen does.
_MAX_BATCH_DIGITS: Final = 18
_MAX_EXCHANGE_RATE: Final = 32
_RATE: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Distinct amount texts and creation times remembered per currency, zone and file (a price list's worth of amounts,
# a day of seconds: about 10 MB each at most), and distinct fee cells per file (about 20 MB at most).
_MAX_REMEMBERED: Final = 100_000
_MAX_FEES_REMEMBERED: Final = 50_000
# Most rows carry no Modification Merchant Reference: they share one empty, read-only mapping.
_NO_METADATA: Final[Mapping[str, str]] = MappingProxyType({})


class AdyenSettlementDetailReport:
    """Parser of Adyen's Settlement Detail Report: recognise a header, then stream its rows."""

    provider: Final = PROVIDER
    name: Final = "adyen_settlement_detail_report"

    @staticmethod
    def recognises(header: Sequence[str]) -> bool:
        """True for a header that is Adyen's, even one missing a required column (parse then names it)."""
        names = set(normalise_header(header))
        # The (GC)/(NC) amount columns are Adyen's own naming; two of them tell the format apart from anyone else's.
        return len(names & {GROSS_DEBIT, GROSS_CREDIT, NET_DEBIT, NET_CREDIT, NET_CURRENCY, BATCH_NUMBER}) >= 2

    @staticmethod
    def parse(lines: Iterable[str], *, source: str) -> Iterator[ProviderRecord | LineError]:
        """One ProviderRecord or LineError per data row, lazily; FileErrorRaised for a file that cannot be read."""
        return parse_rows(
            lines, source=source, required=REQUIRED_COLUMNS, bind=lambda columns: _Layout(source, columns)
        )

    @staticmethod
    def row_parser(columns: Columns, *, source: str) -> RowParser:
        """What parse() reads each row of a file with these columns with (the staged fast path's leftover rows)."""
        return _Layout(source, columns)


# The cells one row is read from, in this order; a column the file lacks reads as an empty cell.
_FIELDS: Final = (
    TYPE,
    NET_CURRENCY,
    NET_DEBIT,
    NET_CREDIT,
    GROSS_CURRENCY,
    GROSS_DEBIT,
    GROSS_CREDIT,
    PSP_REFERENCE,
    MODIFICATION_REFERENCE,
    MERCHANT_REFERENCE,
    PAYMENT_METHOD,
    CREATION_DATE,
    TIME_ZONE,
    BATCH_NUMBER,
    EXCHANGE_RATE,
    MODIFICATION_MERCHANT_REFERENCE,
    MERCHANT_ACCOUNT,
    *FEE_COLUMNS.values(),
)
_FIRST_FEE: Final = len(_FIELDS) - len(FEE_COLUMNS)
_new_record: Final = tuple.__new__


class _Layout:
    """One file's column positions and time zones seen so far; reads one row of that file into a ProviderRecord.

    A report's cells repeat (the same prices, a fixed commission, fees that follow the price, the batch, many rows a
    second): each distinct amount text, fee tuple and creation time is checked and converted once, then looked up.
    Only cells that passed every check are remembered, so a bad cell is always checked, and reported, in the order
    the fields are checked (a row's first wrong cell is the one reported). Bounded: a corrupt file could hold a
    million distinct ones.
    """

    def __init__(self, source: str, columns: Columns) -> None:
        self._source = source
        # A missing optional column points one past the row's last cell, where __call__ puts an empty string; one
        # itemgetter then reads every cell of a row at C speed (a file can have a million rows).
        absent = len(columns.names)
        self._cells = itemgetter(*(columns.position.get(name, absent) for name in _FIELDS))
        # Fee columns this file has; a file without them reports no fees rather than fees of zero.
        self._fee_columns = tuple(
            (position, fee, column)
            for position, (fee, column) in enumerate(FEE_COLUMNS.items(), start=_FIRST_FEE)
            if columns.has(column)
        )
        self._zones: dict[str, tzinfo] = {}
        # A report's rows mostly repeat their batch and exchange rate: each is checked once per change of value.
        self._batch: tuple[str, str | None] | None = None
        self._rate: tuple[str, str | None] | None = None
        # Per currency, unsigned debit/credit texts -> minor units; per net currency and fee cells, the fees.
        self._minor: dict[str, dict[str, int]] = {}
        self._fees: dict[tuple[str, tuple[str, ...]], Mapping[str, int]] = {}
        # Per TimeZone text, Creation Date text -> the UTC time.
        self._times: dict[str, dict[str, datetime]] = {}

    def __call__(self, row: list[str], line_number: int) -> ProviderRecord:
        row.append("")
        cells: tuple[str, ...] = self._cells(row)
        raw_type = cells[0]
        if raw_type == "":
            raise RowInvalid(TYPE, "Type is empty", "")
        net_currency = cells[1]
        known = self._minor.get(net_currency)
        if known is None:
            known = self._known(NET_CURRENCY, net_currency)
        # Remembered amounts are never negative: -1 means "not remembered yet", and that cell takes the checks.
        # credit - debit; the columns carry the sign, so a signed value in either is refused, as is using both.
        # Most rows fill one side only, and the empty side costs nothing.
        debit_text, credit_text = cells[2], cells[3]
        debit = known.get(debit_text, -1) if debit_text else 0
        if debit < 0:
            debit = self._unsigned(NET_DEBIT, debit_text, net_currency)
        credit = known.get(credit_text, -1) if credit_text else 0
        if credit < 0:
            credit = self._unsigned(NET_CREDIT, credit_text, net_currency)
        if debit and credit:
            raise RowInvalid(
                NET_DEBIT, f"both {NET_DEBIT} and {NET_CREDIT} are non-zero", f"{debit_text}/{credit_text}"
            )
        net = credit - debit
        gross_currency = cells[4]
        debit_text, credit_text = cells[5], cells[6]
        if gross_currency == "":
            # Fee and payout rows move no customer money: Adyen leaves the gross side empty.
            if debit_text != "" or credit_text != "":
                raise RowInvalid(GROSS_CURRENCY, "Gross Currency is empty but a gross amount is given", "")
            gross_currency, gross = net_currency, 0
        else:
            known = self._minor.get(gross_currency)
            if known is None:
                known = self._known(GROSS_CURRENCY, gross_currency)
            debit = known.get(debit_text, -1) if debit_text else 0
            if debit < 0:
                debit = self._unsigned(GROSS_DEBIT, debit_text, gross_currency)
            credit = known.get(credit_text, -1) if credit_text else 0
            if credit < 0:
                credit = self._unsigned(GROSS_CREDIT, credit_text, gross_currency)
            if debit and credit:
                raise RowInvalid(
                    GROSS_DEBIT, f"both {GROSS_DEBIT} and {GROSS_CREDIT} are non-zero", f"{debit_text}/{credit_text}"
                )
            gross = credit - debit
        fee_key = (net_currency, cells[_FIRST_FEE:])
        fees = self._fees.get(fee_key)
        if fees is None:
            fees = self._fees_of(fee_key, cells)
        modification_merchant_reference = cells[15]
        metadata = (
            MappingProxyType({"modification_merchant_reference": modification_merchant_reference})
            if modification_merchant_reference
            else _NO_METADATA
        )
        times = self._times.get(cells[12])
        created_at = None if times is None else times.get(cells[11])
        if created_at is None:
            created_at = self._created_at(cells[11], cells[12])
        batch = self._batch
        if batch is None or batch[0] != cells[13]:
            batch = self._batch = (cells[13], _batch(cells[13]))
        rate = self._rate
        if rate is None or rate[0] != cells[14]:
            rate = self._rate = (cells[14], _exchange_rate(cells[14]))
        # In ProviderRecord's field order: one tuple, no keyword matching (this runs for each of a million rows).
        return _new_record(
            ProviderRecord,
            (
                PROVIDER,
                self._source,
                line_number,
                TYPES.get(raw_type, RecordKind.OTHER),
                raw_type,
                cells[7] or None,  # Psp Reference
                cells[8] or None,  # Modification Reference
                cells[9] or None,  # Merchant Reference
                cells[10] or None,  # Payment Method
                created_at,
                gross,
                gross_currency,
                net,
                net_currency,
                fees,
                batch[1],
                rate[1],
                metadata,
                cells[16] or None,  # Merchant Account
                None,
                None,
            ),
        )

    def _known(self, field: str, currency: str) -> dict[str, int]:
        """The remembered amounts of a currency the row names; RowInvalid if it is not one."""
        known: dict[str, int] = {}
        self._minor[_currency(field, currency)] = known
        return known

    def _unsigned(self, field: str, text: str, currency: str) -> int:
        """A non-empty debit or credit cell not remembered yet: checked, converted and remembered."""
        if text[0] == "-":
            raise RowInvalid(field, f"{field} is negative (the column gives the sign)", text)
        value = _amount(field, text, currency, empty_is_zero=False)
        known = self._minor[currency]
        if len(known) >= _MAX_REMEMBERED:
            known.clear()
        known[text] = value
        return value

    def _fees_of(self, key: tuple[str, tuple[str, ...]], cells: tuple[str, ...]) -> Mapping[str, int]:
        """The row's fees by type, each fee column the file has checked and converted (an empty cell is zero)."""
        currency = key[0]
        fees: Mapping[str, int] = MappingProxyType(
            {
                fee: _amount(column, text, currency, empty_is_zero=False) if (text := cells[position]) else 0
                for position, fee, column in self._fee_columns
            }
        )
        if len(self._fees) >= _MAX_FEES_REMEMBERED:
            self._fees.clear()
        self._fees[key] = fees
        return fees

    def _created_at(self, text: str, zone_name: str) -> datetime:
        zone = self._zones.get(zone_name)
        if zone is None:
            zone = _zone(zone_name)
            self._zones[zone_name] = zone
        if _DATE_TIME.fullmatch(text) is None:
            raise RowInvalid(CREATION_DATE, "Creation Date is not YYYY-MM-DD HH:MM:SS", text)
        try:
            local = datetime.fromisoformat(text)
        except ValueError:
            raise RowInvalid(CREATION_DATE, "Creation Date is not a valid date and time", text) from None
        aware = local.replace(tzinfo=zone)
        # In an IANA zone a time in the spring-forward gap never happened on a clock there, so the row is wrong. A
        # time in the autumn overlap is read with the earlier offset (fold=0); an hour either way at 02:00-03:00
        # cannot move an item to another day.
        if isinstance(zone, ZoneInfo) and aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
            raise RowInvalid(CREATION_DATE, f"Creation Date does not exist in {zone_name} (clock change)", text)
        # Normalised to UTC: an aware time in a repeated hour never compares equal across zones (PEP 495), which
        # would make matching and period checks quietly wrong.
        utc = aware.astimezone(UTC)
        times = self._times.get(zone_name)
        if times is None or len(times) >= _MAX_REMEMBERED:
            times = self._times[zone_name] = {}
        times[text] = utc
        return utc


def _zone(name: str) -> tzinfo:
    known = _ABBREVIATIONS.get(name)
    if known is not None:
        return known
    if "/" in name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise RowInvalid(TIME_ZONE, "TimeZone is not a known abbreviation (UTC, GMT, CET, CEST, ...) or IANA zone", name)


def _currency(field: str, text: str) -> str:
    if text not in REPORTABLE_CURRENCIES:
        raise RowInvalid(field, f"{field} is not an ISO 4217 code in upper case", text)
    return text


def _amount(field: str, text: str, currency: str, *, empty_is_zero: bool) -> int:
    try:
        return to_minor_units(text, currency, field=field, empty_is_zero=empty_is_zero)
    except AmountInvalid as exc:
        raise RowInvalid(field, f"{field} {exc.reason}", text) from None


def _batch(text: str) -> str | None:
    # Adyen's sample rows leave Batch Number empty (the file name carries the batch): None, for the caller to fill.
    if text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_BATCH_DIGITS:
        raise RowInvalid(BATCH_NUMBER, "Batch Number is not a number", text)
    return text


def _exchange_rate(text: str) -> str | None:
    if text == "":
        return None
    # Kept as text; checked to be a plain positive decimal so a corrupt cell is caught here, not in a report.
    if len(text) > _MAX_EXCHANGE_RATE or _RATE.fullmatch(text) is None or text.strip("0.") == "":
        raise RowInvalid(EXCHANGE_RATE, "Exchange Rate is not a positive decimal", text)
    return text
