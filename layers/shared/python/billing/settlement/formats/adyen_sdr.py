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
# Distinct amount texts remembered per currency and file (a few MB at most).
_MAX_REMEMBERED: Final = 20_000
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


class _Layout:
    """One file's column positions and time zones seen so far; reads one row of that file into a ProviderRecord."""

    def __init__(self, source: str, columns: Columns) -> None:
        self._source = source
        # A missing optional column points one past the row's last cell, where __call__ puts an empty string; one
        # itemgetter then reads every cell of a row at C speed (a file can have a million rows).
        absent = len(columns.names)
        self._cells = itemgetter(*(columns.position.get(name, absent) for name in _FIELDS))
        # Fee columns this file has; a file without them reports no fees rather than fees of zero.
        self._fee_columns = tuple(
            (position, fee, column)
            for position, (fee, column) in enumerate(FEE_COLUMNS.items(), start=len(_FIELDS) - len(FEE_COLUMNS))
            if columns.has(column)
        )
        self._zones: dict[str, tzinfo] = {}
        # A report's rows mostly repeat their batch and exchange rate: each is checked once per change of value.
        self._batch: tuple[str, str | None] | None = None
        self._rate: tuple[str, str | None] | None = None
        # Amount cells repeat (a fixed commission on every row, the same prices over and over): each distinct text is
        # converted once per currency, then looked up. Bounded, since a corrupt file could hold a million distinct ones.
        self._minor: dict[str, dict[str, int]] = {}

    def __call__(self, row: list[str], line_number: int) -> ProviderRecord:
        row.append("")
        cells: tuple[str, ...] = self._cells(row)
        (
            raw_type,
            net_currency_text,
            net_debit,
            net_credit,
            gross_currency_text,
            gross_debit,
            gross_credit,
            psp_reference,
            modification_reference,
            merchant_reference,
            payment_method,
            creation_date,
            time_zone,
            batch_number,
            exchange_rate,
            modification_merchant_reference,
            merchant_account,
        ) = cells[: len(_FIELDS) - len(FEE_COLUMNS)]
        if raw_type == "":
            raise RowInvalid(TYPE, "Type is empty", "")
        net_currency = _currency(NET_CURRENCY, net_currency_text)
        net = self._signed(NET_DEBIT, net_debit, NET_CREDIT, net_credit, net_currency)
        if gross_currency_text == "":
            # Fee and payout rows move no customer money: Adyen leaves the gross side empty.
            if gross_debit != "" or gross_credit != "":
                raise RowInvalid(GROSS_CURRENCY, "Gross Currency is empty but a gross amount is given", "")
            gross_currency, gross = net_currency, 0
        else:
            gross_currency = _currency(GROSS_CURRENCY, gross_currency_text)
            gross = self._signed(GROSS_DEBIT, gross_debit, GROSS_CREDIT, gross_credit, gross_currency)
        fees = MappingProxyType(
            {
                fee: self._amount(column, text, net_currency) if (text := cells[position]) else 0
                for position, fee, column in self._fee_columns
            }
        )
        metadata = (
            MappingProxyType({"modification_merchant_reference": modification_merchant_reference})
            if modification_merchant_reference
            else _NO_METADATA
        )
        # In the order the fields were always checked: a row's first wrong cell is the one reported.
        created_at = self._created_at(creation_date, time_zone)
        batch = self._batch
        if batch is None or batch[0] != batch_number:
            batch = self._batch = (batch_number, _batch(batch_number))
        rate = self._rate
        if rate is None or rate[0] != exchange_rate:
            rate = self._rate = (exchange_rate, _exchange_rate(exchange_rate))
        return ProviderRecord(
            provider=PROVIDER,
            source=self._source,
            line_number=line_number,
            kind=TYPES.get(raw_type, RecordKind.OTHER),
            raw_type=raw_type,
            provider_reference=psp_reference or None,
            secondary_reference=modification_reference or None,
            merchant_reference=merchant_reference or None,
            payment_method=payment_method or None,
            created_at=created_at,
            gross_amount=gross,
            gross_currency=gross_currency,
            net_amount=net,
            net_currency=net_currency,
            fees=fees,
            batch=batch[1],
            exchange_rate=rate[1],
            metadata=metadata,
            merchant_account=merchant_account or None,
        )

    def _amount(self, field: str, text: str, currency: str) -> int:
        """to_minor_units of a non-empty cell, remembered per currency (only amounts that converted are kept)."""
        known = self._minor.get(currency)
        if known is None:
            known = self._minor[currency] = {}
        value = known.get(text)
        if value is None:
            value = _amount(field, text, currency, empty_is_zero=False)
            if len(known) >= _MAX_REMEMBERED:
                known.clear()
            known[text] = value
        return value

    def _signed(self, debit_field: str, debit_text: str, credit_field: str, credit_text: str, currency: str) -> int:
        """credit - debit; the columns carry the sign, so a signed value in either is refused, as is using both."""
        # Most rows fill one side only; the empty side costs nothing (this runs twice for each of a million rows).
        debit = self._unsigned(debit_field, debit_text, currency) if debit_text else 0
        credit = self._unsigned(credit_field, credit_text, currency) if credit_text else 0
        if debit and credit:
            raise RowInvalid(
                debit_field, f"both {debit_field} and {credit_field} are non-zero", f"{debit_text}/{credit_text}"
            )
        return credit - debit

    def _unsigned(self, field: str, text: str, currency: str) -> int:
        if text[0] == "-":
            raise RowInvalid(field, f"{field} is negative (the column gives the sign)", text)
        return self._amount(field, text, currency)

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
        return aware.astimezone(UTC)


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
