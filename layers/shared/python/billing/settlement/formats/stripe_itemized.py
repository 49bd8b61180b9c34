"""Stripe itemized payout reconciliation report (payout_reconciliation.itemized.5, .by_id.itemized.4).

Layout followed: Stripe's report-type documentation for payout reconciliation ("Payout reconciliation report",
docs.stripe.com, reports/payout-reconciliation and reports/report-types). One row per balance transaction settled in
an automatic payout; the columns a report run returns are chosen by the caller, so they are read by name:

    automatic_payout_id, automatic_payout_effective_at[_utc], balance_transaction_id, created_utc, created,
    available_on_utc, available_on, currency, gross, fee, net, reporting_category, source_id, description,
    customer_facing_amount, customer_facing_currency, charge_id, payment_intent_id, payment_method_type,
    card_brand, ..., payment_metadata[<key>] (any number), refund_metadata[<key>], transfer_metadata[<key>]

gross, fee and net are signed decimal strings in major units of `currency` (lower case in Stripe's files), with
net = gross - fee; the row is refused if they disagree. The report must be run with the default "." decimal
separator: a decimal comma is refused rather than guessed. `created_utc` is preferred; `created` is in the time
zone the report was run with and is read as UTC, so run reports without a time zone (Stripe's default) when only
`created` is requested. A date-time is "YYYY-MM-DD HH:MM:SS"; a Unix timestamp is also accepted.

Payouts: the itemized report lists the items of each payout, grouped by automatic_payout_id, which becomes the
record's batch. A payout's total is the sum of `net` over the batch's items (every kind except PAYOUT). If a
`payout` row is present it carries the payout itself as a debit of the balance, so a balanced batch has
sum(items' net) == -payout's net. `payout_reversal` (a failed payout's money returning to the balance) is an
item of the payout that pays it out again, so it maps to ADJUSTMENT, not PAYOUT, and counts among the items.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from billing.settlement.formats.amounts import AmountInvalid, is_reportable_currency, to_minor_units
from billing.settlement.formats.records import (
    Columns,
    FileError,
    FileErrorRaised,
    LineError,
    ProviderRecord,
    RecordKind,
    RowInvalid,
    normalise_header,
    parse_rows,
)

PROVIDER: Final = "stripe"

BALANCE_TRANSACTION_ID: Final = "balance_transaction_id"
CREATED: Final = "created"
CREATED_UTC: Final = "created_utc"
CURRENCY: Final = "currency"
GROSS: Final = "gross"
FEE: Final = "fee"
NET: Final = "net"
REPORTING_CATEGORY: Final = "reporting_category"
SOURCE_ID: Final = "source_id"
CHARGE_ID: Final = "charge_id"
PAYMENT_INTENT_ID: Final = "payment_intent_id"
AUTOMATIC_PAYOUT_ID: Final = "automatic_payout_id"
CUSTOMER_FACING_AMOUNT: Final = "customer_facing_amount"
CUSTOMER_FACING_CURRENCY: Final = "customer_facing_currency"
PAYMENT_METHOD_TYPE: Final = "payment_method_type"
CARD_BRAND: Final = "card_brand"
METADATA_PREFIX: Final = "payment_metadata["
# The metadata key our PaymentIntents carry (billing.providers.stripe.params.EXECUTION_ID_KEY, not imported: that
# module loads the Stripe SDK, and this one stays pure). The fallback when payment_intent_id is missing or unknown.
EXECUTION_ID_KEY: Final = "execution_id"
STRIPE_FEE: Final = "stripe_fee"

# `created` or `created_utc` is required too; checked apart because either one will do.
REQUIRED_COLUMNS: Final = (BALANCE_TRANSACTION_ID, CURRENCY, GROSS, FEE, NET, REPORTING_CATEGORY)

CATEGORIES: Final = MappingProxyType(
    {
        "charge": RecordKind.SETTLED,
        "refund": RecordKind.REFUNDED,
        "dispute": RecordKind.CHARGEBACK,
        "dispute_reversal": RecordKind.CHARGEBACK_REVERSED,
        "fee": RecordKind.FEE,
        "payout": RecordKind.PAYOUT,
        "payout_reversal": RecordKind.ADJUSTMENT,
        "other_adjustment": RecordKind.ADJUSTMENT,
    }
)

_DATE_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
# Seconds since 1970, up to year 5138: a plain count of digits, no sign, no fraction.
_UNIX_SECONDS: Final = re.compile(r"0|[1-9][0-9]{0,10}")


class StripeItemizedPayoutReconciliation:
    """Parser of Stripe's itemized payout reconciliation report: recognise a header, then stream its rows."""

    provider: Final = PROVIDER
    name: Final = "stripe_payout_reconciliation_itemized"

    @staticmethod
    def recognises(header: Sequence[str]) -> bool:
        """True for a header that is Stripe's, even one missing a required column (parse then names it)."""
        names = set(normalise_header(header))
        return BALANCE_TRANSACTION_ID in names or (REPORTING_CATEGORY in names and NET in names)

    @staticmethod
    def parse(lines: Iterable[str], *, source: str) -> Iterator[ProviderRecord | LineError]:
        """One ProviderRecord or LineError per data row, lazily; FileErrorRaised for a file that cannot be read."""
        return parse_rows(lines, source=source, required=REQUIRED_COLUMNS, bind=lambda columns: _bind(source, columns))


def _bind(source: str, columns: Columns) -> _Layout:
    if not (columns.has(CREATED_UTC) or columns.has(CREATED)):
        raise FileErrorRaised(FileError(source, f"missing required column {CREATED_UTC!r} (or {CREATED!r})"))
    return _Layout(source, columns)


class _Layout:
    """One file's column positions; reads one row of that file into a ProviderRecord."""

    def __init__(self, source: str, columns: Columns) -> None:
        self._source = source
        self._index = columns.position
        self._created = CREATED_UTC if columns.has(CREATED_UTC) else CREATED
        self._metadata = tuple(
            (name[len(METADATA_PREFIX) : -1], position)
            for name, position in columns.position.items()
            if name.startswith(METADATA_PREFIX) and name.endswith("]") and len(name) > len(METADATA_PREFIX) + 1
        )

    def __call__(self, row: list[str], line_number: int) -> ProviderRecord:
        index = self._index

        def cell(name: str) -> str:
            position = index.get(name)
            return "" if position is None else row[position]

        if cell(BALANCE_TRANSACTION_ID) == "":
            raise RowInvalid(BALANCE_TRANSACTION_ID, "balance_transaction_id is empty", "")
        raw_type = cell(REPORTING_CATEGORY)
        if raw_type == "":
            raise RowInvalid(REPORTING_CATEGORY, "reporting_category is empty", "")
        currency = _currency(CURRENCY, cell(CURRENCY))
        gross = _amount(GROSS, cell(GROSS), currency)
        fee = _amount(FEE, cell(FEE), currency)
        net = _amount(NET, cell(NET), currency)
        if net != gross - fee:
            # Stripe defines net as gross - fee; a row where that fails is corrupt, and summing it would hide it.
            raise RowInvalid(NET, "net is not gross - fee", f"{cell(GROSS)} - {cell(FEE)} != {cell(NET)}")
        # An empty metadata cell means the payment has no such key; it is left out rather than kept as "".
        metadata = MappingProxyType({key: row[position] for key, position in self._metadata if row[position]})
        facing_amount, facing_currency = _customer_facing(cell(CUSTOMER_FACING_AMOUNT), cell(CUSTOMER_FACING_CURRENCY))
        return ProviderRecord(
            provider=PROVIDER,
            source=self._source,
            line_number=line_number,
            kind=CATEGORIES.get(raw_type, RecordKind.OTHER),
            raw_type=raw_type,
            provider_reference=cell(PAYMENT_INTENT_ID) or None,
            secondary_reference=cell(CHARGE_ID) or cell(SOURCE_ID) or None,
            merchant_reference=metadata.get(EXECUTION_ID_KEY),
            payment_method=cell(PAYMENT_METHOD_TYPE) or cell(CARD_BRAND) or None,
            created_at=_created_at(self._created, cell(self._created)),
            gross_amount=gross,
            gross_currency=currency,
            net_amount=net,
            net_currency=currency,
            fees=MappingProxyType({STRIPE_FEE: fee}),
            batch=cell(AUTOMATIC_PAYOUT_ID) or None,
            exchange_rate=None,
            metadata=metadata,
            customer_facing_amount=facing_amount,
            customer_facing_currency=facing_currency,
        )


def _currency(field: str, text: str) -> str:
    # Stripe writes codes in lower case ("eur"); ISO 4217 and the rest of the engine use upper case.
    code = text.upper()
    if len(text) != 3 or not text.isascii() or not is_reportable_currency(code):
        raise RowInvalid(field, f"{field} is not an ISO 4217 code", text)
    return code


def _amount(field: str, text: str, currency: str) -> int:
    try:
        return to_minor_units(text, currency, field=field)
    except AmountInvalid as exc:
        raise RowInvalid(field, f"{field} {exc.reason}", text) from None


def _customer_facing(amount_text: str, currency_text: str) -> tuple[int | None, str | None]:
    if amount_text == "" and currency_text == "":
        return None, None
    if amount_text == "" or currency_text == "":
        missing = CUSTOMER_FACING_AMOUNT if amount_text == "" else CUSTOMER_FACING_CURRENCY
        raise RowInvalid(missing, f"{missing} is empty while the other customer-facing column is not", "")
    currency = _currency(CUSTOMER_FACING_CURRENCY, currency_text)
    return _amount(CUSTOMER_FACING_AMOUNT, amount_text, currency), currency


def _created_at(field: str, text: str) -> datetime:
    if _UNIX_SECONDS.fullmatch(text) is not None:
        return datetime.fromtimestamp(int(text), UTC)
    if _DATE_TIME.fullmatch(text) is None:
        raise RowInvalid(field, f"{field} is not YYYY-MM-DD HH:MM:SS (UTC) or a Unix timestamp", text)
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        raise RowInvalid(field, f"{field} is not a valid date and time", text) from None
