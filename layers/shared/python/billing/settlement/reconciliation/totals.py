"""Money the files moved, per currency, and the fees they charged, per fee type and per payment method.

Sums of integer minor units, exact in every currency. Gross figures (settled, refunded, chargebacks) are totalled in
each row's gross currency, net and fees in its net currency (Adyen may settle a USD payment in EUR); a currency
that is both gets one entry. A row's fees are the provider's fee columns (commission, markup, scheme_fees,
interchange; Stripe's fee as stripe_fee); a row that is itself a fee (Adyen Fee / PaymentCost / InvoiceDeduction,
Stripe fee) and fills no fee column counts its net debit, under its kind, so nothing charged is left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final

from billing.settlement.formats.records import ProviderRecord, RecordKind
from billing.settlement.outcome import CurrencyTotals, FeeTotal
from billing.settlement.reconciliation.ports import MatchedSums

FEE_ROW_KINDS: Final = frozenset({RecordKind.FEE, RecordKind.PAYMENT_COST, RecordKind.INVOICE_DEDUCTION})
NO_PAYMENT_METHOD: Final = "unspecified"
_CHARGEBACK_KINDS: Final = frozenset(
    {RecordKind.CHARGEBACK, RecordKind.SECOND_CHARGEBACK, RecordKind.CHARGEBACK_REVERSED}
)


def row_fees(record: ProviderRecord) -> dict[str, int]:
    """The fees one row charged, by type, in minor units of its net currency (cost positive)."""
    fees = {fee: amount for fee, amount in record.fees.items() if amount}
    if not fees and record.kind in FEE_ROW_KINDS and record.net_amount:
        return {record.kind.value: -record.net_amount}
    return fees


@dataclass(slots=True)
class _Sums:
    items: int = 0
    settled: int = 0
    refunded: int = 0
    chargebacks: int = 0
    net: int = 0
    fees: int = 0
    expected_settled: int = 0


class Totals:
    """Accumulates a report's CurrencyTotals and FeeTotals, row by row."""

    def __init__(self) -> None:
        self._sums: dict[str, _Sums] = {}
        # Per net currency, then fee type / payment method: no key tuple to build per row and fee.
        self._fee_types: dict[str, Counter[str]] = {}
        self._fee_methods: dict[str, Counter[str]] = {}

    def add(self, record: ProviderRecord) -> None:
        kind = record.kind
        if kind is RecordKind.PAYOUT:
            # The payout moves the batch's money to the bank: its own figure is checked in payouts, not summed here.
            return
        gross_currency = record.gross_currency
        gross = self._sums.get(gross_currency) or self._currency(gross_currency)
        gross.items += 1
        if kind is RecordKind.SETTLED:
            gross.settled += record.gross_amount
        elif kind is RecordKind.REFUNDED:
            gross.refunded -= record.gross_amount
        elif kind in _CHARGEBACK_KINDS:
            # Chargebacks take money (negative gross); a reversal, won back, gives it back and lowers the sum.
            gross.chargebacks -= record.gross_amount
        currency = record.net_currency
        net = gross if currency == gross_currency else self._currency(currency)
        net.net += record.net_amount
        # row_fees, without building its dict for the common row (one of a million): the fee columns that are not
        # zero, else a fee row's own net debit.
        fees = record.fees
        if not any(fees.values()):
            if kind not in FEE_ROW_KINDS or not record.net_amount:
                return
            fees = {kind.value: -record.net_amount}
        types = self._fee_types.get(currency)
        if types is None:
            types = self._fee_types[currency] = Counter()
        methods = self._fee_methods.get(currency)
        if methods is None:
            methods = self._fee_methods[currency] = Counter()
        charged = 0
        for fee, amount in fees.items():
            if amount:
                charged += amount
                types[fee] += amount
        net.fees += charged
        # A row's fees all go to its one payment method: added up once.
        methods[record.payment_method or NO_PAYMENT_METHOD] += charged

    def add_matched(self, sums: MatchedSums) -> None:
        """Lines matched in the database (the staged fast path), as their sums: settled items paid and settled in
        one currency, added exactly as add() adds each of them."""
        totals = self._currency(sums.currency)
        totals.items += sums.items
        totals.settled += sums.gross
        totals.net += sums.net
        if not sums.payment_methods:
            return  # no line charged a fee: add() makes no fee entry for such lines
        totals.fees += sums.fees
        types = self._fee_types.setdefault(sums.currency, Counter())
        methods = self._fee_methods.setdefault(sums.currency, Counter())
        for fee, amount in sums.fee_types.items():
            types[fee] += amount
        for method, amount in sums.payment_methods.items():
            methods[method or NO_PAYMENT_METHOD] += amount

    def expect(self, currency: str, amount: int) -> None:
        """One of our executions completed in the period: what we expected the provider to settle."""
        self._currency(currency).expected_settled += amount

    def currency_totals(self) -> tuple[CurrencyTotals, ...]:
        return tuple(
            CurrencyTotals(
                currency=currency,
                items=sums.items,
                settled=sums.settled,
                refunded=sums.refunded,
                chargebacks=sums.chargebacks,
                net=sums.net,
                fees=sums.fees,
                expected_settled=sums.expected_settled,
            )
            for currency, sums in sorted(self._sums.items())
        )

    def fees_by_type(self) -> tuple[FeeTotal, ...]:
        return _fee_totals(self._fee_types)

    def fees_by_payment_method(self) -> tuple[FeeTotal, ...]:
        return _fee_totals(self._fee_methods)

    def _currency(self, currency: str) -> _Sums:
        sums = self._sums.get(currency)
        if sums is None:
            sums = self._sums[currency] = _Sums()
        return sums


def _fee_totals(sums: dict[str, Counter[str]]) -> tuple[FeeTotal, ...]:
    """In (currency, key) order."""
    return tuple(
        FeeTotal(currency, key, amount) for currency in sorted(sums) for key, amount in sorted(sums[currency].items())
    )
