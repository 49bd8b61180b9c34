"""Provider settlement files written the way Adyen and Stripe write them, for the demo and the bench (dev-only code).

The engine reads Adyen's Settlement Detail Report and Stripe's itemized payout reconciliation report
(billing.settlement.formats); the local stack reaches neither provider, so the demo and
bench/settlement_reconciliation.py write such files themselves from the executions they made, with the
discrepancies they mean to show. The writers keep each batch's (payout's) net per currency as they go, so a payout
line balances its items unless it is told to be off by something.

    writer = AdyenSettlementDetailWriter(stream, merchant_account="DemoMerchantECOM")
    writer.write(ReportItem(RecordKind.SETTLED, 4900, "EUR", when, payment_reference="QFQTPCQ8HXSKGK82",
                            execution_id=str(execution.id), fees=adyen_card_fees(4900)), batch="42")
    writer.payout("42", "EUR")

Amounts are integer minor units in code and decimal major units in the file, by the currency's ISO 4217 exponent.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final, TextIO
from zoneinfo import ZoneInfo

from billing.domain.money import currency_exponent
from billing.settlement.formats.adyen_sdr import CLASSIC_HEADER, FEE_COLUMNS
from billing.settlement.formats.records import RecordKind
from billing.settlement.formats.stripe_itemized import STRIPE_FEE

NO_FEES: Final[Mapping[str, int]] = MappingProxyType({})
# Adyen writes Creation Date in the account's zone, named in TimeZone by its abbreviation (CET / CEST).
ADYEN_ZONE: Final = ZoneInfo("Europe/Amsterdam")
_ADYEN_TYPES: Final = MappingProxyType(
    {
        RecordKind.SETTLED: "Settled",
        RecordKind.REFUNDED: "Refunded",
        RecordKind.CHARGEBACK: "Chargeback",
        RecordKind.CHARGEBACK_REVERSED: "ChargebackReversed",
        RecordKind.FEE: "Fee",
    }
)
_STRIPE_CATEGORIES: Final = MappingProxyType(
    {
        RecordKind.SETTLED: "charge",
        RecordKind.REFUNDED: "refund",
        RecordKind.CHARGEBACK: "dispute",
        RecordKind.CHARGEBACK_REVERSED: "dispute_reversal",
        RecordKind.FEE: "fee",
    }
)
# Kinds that move money from us to the customer (the file's debit side).
_OUTGOING: Final = frozenset({RecordKind.REFUNDED, RecordKind.CHARGEBACK, RecordKind.FEE, RecordKind.OTHER})
STRIPE_HEADER: Final = (
    "automatic_payout_id",
    "automatic_payout_effective_at_utc",
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "charge_id",
    "payment_intent_id",
    "payment_method_type",
    "card_brand",
    "payment_metadata[execution_id]",
)
_ADYEN_COLUMN: Final = {name: index for index, name in enumerate(CLASSIC_HEADER)}
_FEE_POSITIONS: Final = tuple((fee, _ADYEN_COLUMN[column]) for fee, column in FEE_COLUMNS.items())


@dataclass(frozen=True, slots=True)
class ReportItem:
    """One line to write: a payment, a refund or chargeback of one, a fee, or a type the engine does not map.

    `amount` is the magnitude in minor units of `currency`: what was paid, refunded or charged; the writer gives it
    the side (credit or debit) the provider would. `fees` are by the provider's fee type (Adyen's four columns,
    Stripe's stripe_fee), also in minor units of `currency`.
    """

    kind: RecordKind
    amount: int
    currency: str
    created_at: datetime
    payment_reference: str | None = None  # Adyen Psp Reference / Stripe payment_intent_id: the payment's
    modification_reference: str | None = None  # the refund's or dispute's own reference
    execution_id: str | None = None  # Adyen Merchant Reference / Stripe payment_metadata[execution_id]
    payment_method: str | None = "visa"
    fees: Mapping[str, int] = field(default_factory=lambda: NO_FEES)
    raw_type: str | None = None  # the provider's type for RecordKind.OTHER


def major_units(amount: int, currency: str) -> str:
    """Minor units as the provider writes them: "12.34", "-0.05", "1200" (JPY), exactly, never through a float."""
    exponent = currency_exponent(currency)
    sign = "-" if amount < 0 else ""
    units, minor = divmod(abs(amount), 10**exponent)
    return f"{sign}{units}" if exponent == 0 else f"{sign}{units}.{minor:0{exponent}d}"


def adyen_card_fees(amount: int) -> dict[str, int]:
    """Fees of a card payment as Adyen itemises them: a fixed commission, then markup, scheme fees and interchange
    in basis points of the amount (rounded down each), in minor units."""
    return {
        "commission": 10,
        "markup": amount * 20 // 10_000,
        "scheme_fees": amount * 10 // 10_000,
        "interchange": amount * 30 // 10_000,
    }


def stripe_card_fee(amount: int) -> int:
    """Stripe's standard European card price: 1.5 % + 0.25, rounded half up, in minor units."""
    return (amount * 150 + 5_000) // 10_000 + 25


def reference(prefix: str, *parts: object, length: int = 16) -> str:
    """A provider-looking reference, stable for its parts: `prefix` then upper-case hex (never only digits, so no
    reference can look like a card number)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest().upper()
    return prefix + digest[: length - len(prefix)]


class AdyenSettlementDetailWriter:
    """Writes a Settlement Detail Report in Adyen's classic 30-column layout (the header is written at once)."""

    def __init__(
        self, stream: TextIO, *, company_account: str = "DemoCompany", merchant_account: str = "DemoMerchantECOM"
    ) -> None:
        self._writer = csv.writer(stream, lineterminator="\n")
        self._company = company_account
        self._merchant = merchant_account
        self._nets: dict[tuple[str, str], int] = {}
        self._zones: dict[datetime, tuple[str, str]] = {}
        self.lines = 1
        self._writer.writerow(CLASSIC_HEADER)

    def net_of(self, batch: str, currency: str) -> int:
        """The batch's items' net so far, in minor units of `currency` (what a balanced payout pays out)."""
        return self._nets.get((batch, currency), 0)

    def write(self, item: ReportItem, *, batch: str, merchant_account: str | None = None) -> None:
        row = [""] * len(CLASSIC_HEADER)
        currency = item.currency
        fees = sum(item.fees.values())
        outgoing = item.kind in _OUTGOING
        # Payments are credits less their fees; refunds, chargebacks and fees are debits plus theirs.
        net = -(item.amount + fees) if outgoing else item.amount - fees
        row[0] = self._company
        row[1] = merchant_account or self._merchant
        row[2] = item.payment_reference or ""
        row[3] = item.execution_id or ""
        row[4] = item.payment_method or ""
        row[5], row[6] = self._local(item.created_at)
        row[7] = item.raw_type or _ADYEN_TYPES[item.kind]
        row[8] = item.modification_reference or ""
        if item.kind not in (RecordKind.FEE, RecordKind.OTHER):
            # Fee rows move no customer money: Adyen leaves the gross side empty.
            row[9] = currency
            row[11 if not outgoing else 10] = major_units(item.amount, currency)
            row[12] = "1"
        row[13] = currency
        row[15 if net >= 0 else 14] = major_units(abs(net), currency)
        for fee, position in _FEE_POSITIONS:
            if fee in item.fees:
                row[position] = major_units(item.fees[fee], currency)
        row[_ADYEN_COLUMN["Batch Number"]] = batch
        self._writer.writerow(row)
        self.lines += 1
        self._nets[(batch, currency)] = self.net_of(batch, currency) + net

    def payout(self, batch: str, currency: str, *, off_by: int = 0, when: datetime | None = None) -> int:
        """The MerchantPayout line of `batch` in `currency`: its items' net, plus `off_by` (an unbalanced payout);
        returns the amount paid out, in minor units."""
        paid = self.net_of(batch, currency) + off_by
        row = [""] * len(CLASSIC_HEADER)
        row[0], row[1] = self._company, self._merchant
        row[5], row[6] = self._local(when or datetime.now(UTC))
        row[7] = "MerchantPayout"
        row[13] = currency
        row[14 if paid >= 0 else 15] = major_units(abs(paid), currency)
        row[_ADYEN_COLUMN["Batch Number"]] = batch
        self._writer.writerow(row)
        self.lines += 1
        return paid

    def _local(self, moment: datetime) -> tuple[str, str]:
        local = moment.astimezone(ADYEN_ZONE)
        return local.strftime("%Y-%m-%d %H:%M:%S"), local.tzname() or "CET"


class StripePayoutReconciliationWriter:
    """Writes Stripe's itemized payout reconciliation report (payout_reconciliation.itemized), header included."""

    def __init__(self, stream: TextIO) -> None:
        self._writer = csv.writer(stream, lineterminator="\n")
        self._nets: dict[tuple[str, str], int] = {}
        self._effective: dict[str, str] = {}
        self.lines = 1
        self._writer.writerow(STRIPE_HEADER)

    def net_of(self, payout: str, currency: str) -> int:
        return self._nets.get((payout, currency), 0)

    def write(self, item: ReportItem, *, payout: str) -> None:
        currency = item.currency
        outgoing = item.kind in _OUTGOING
        gross = -item.amount if outgoing else item.amount
        fee = item.fees.get(STRIPE_FEE, 0)
        net = gross - fee
        category = item.raw_type or _STRIPE_CATEGORIES[item.kind]
        source = item.modification_reference or (
            "ch_" + item.payment_reference.removeprefix("pi_") if item.payment_reference else ""
        )
        self._row(
            payout,
            item.created_at,
            currency,
            gross,
            fee,
            net,
            category,
            source=source,
            charge=("ch_" + item.payment_reference.removeprefix("pi_")) if item.payment_reference else "",
            intent=item.payment_reference or "",
            method=item.payment_method or "",
            execution_id=item.execution_id or "",
        )
        self._nets[(payout, currency)] = self.net_of(payout, currency) + net

    def payout(self, payout: str, currency: str, *, off_by: int = 0, when: datetime | None = None) -> int:
        """The `payout` row: the balance paid out (a debit, so a negative net), the items' net plus `off_by`."""
        paid = self.net_of(payout, currency) + off_by
        self._row(payout, when or datetime.now(UTC), currency, -paid, 0, -paid, "payout", source=payout)
        return paid

    def _row(
        self,
        payout: str,
        created: datetime,
        currency: str,
        gross: int,
        fee: int,
        net: int,
        category: str,
        *,
        source: str,
        charge: str = "",
        intent: str = "",
        method: str = "",
        execution_id: str = "",
    ) -> None:
        moment = created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        effective = self._effective.setdefault(payout, moment)
        transaction = reference("txn_", payout, category, source, moment, self.lines, length=28)
        self._writer.writerow(
            [
                payout,
                effective,
                transaction,
                moment,
                moment,
                currency.lower(),
                major_units(gross, currency),
                major_units(fee, currency),
                major_units(net, currency),
                category,
                source,
                "",
                "",
                "",
                charge,
                intent,
                "card" if method else "",
                method,
                execution_id,
            ]
        )
        self.lines += 1
