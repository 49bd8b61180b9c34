"""The demo's and the bench's provider files: what the writers write is what the parsers read, payouts included."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from billing.local.provider_settlement_files import (
    AdyenSettlementDetailWriter,
    ReportItem,
    StripePayoutReconciliationWriter,
    adyen_card_fees,
    major_units,
    reference,
    stripe_card_fee,
)
from billing.settlement.formats.adyen_sdr import AdyenSettlementDetailReport
from billing.settlement.formats.records import LineError, ProviderRecord, RecordKind
from billing.settlement.formats.stripe_itemized import STRIPE_FEE, StripeItemizedPayoutReconciliation
from billing.settlement.reconciliation.payouts import Payouts

WHEN = datetime(2026, 4, 10, 9, 30, tzinfo=UTC)  # 11:30 CEST in Adyen's file


def _records(parsed: Iterable[ProviderRecord | LineError]) -> list[ProviderRecord]:
    records = list(parsed)
    assert not [r for r in records if isinstance(r, LineError)], records
    return [r for r in records if isinstance(r, ProviderRecord)]


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1234, "EUR", "12.34"), (-5, "EUR", "-0.05"), (1200, "JPY", "1200"), (1234, "KWD", "1.234"), (0, "EUR", "0.00")],
)
def test_major_units_writes_minor_units_by_the_currency_exponent(amount: int, currency: str, text: str) -> None:
    assert major_units(amount, currency) == text


def test_an_adyen_file_reads_back_with_its_signs_fees_and_a_balanced_payout() -> None:
    stream = io.StringIO(newline="")
    writer = AdyenSettlementDetailWriter(stream, merchant_account="TestMerchant")
    psp = reference("Q", "payment")
    writer.write(ReportItem(RecordKind.SETTLED, 4900, "EUR", WHEN, psp, None, "exec-1", fees=adyen_card_fees(4900)),
                 batch="7")  # fmt: skip
    writer.write(ReportItem(RecordKind.REFUNDED, 1000, "EUR", WHEN, psp, reference("R", "refund"), "exec-1"), batch="7")
    writer.write(ReportItem(RecordKind.FEE, 250, "EUR", WHEN, payment_method=None), batch="7")
    paid = writer.payout("7", "EUR", when=WHEN)

    settled, refunded, fee, payout = _records(
        AdyenSettlementDetailReport.parse(io.StringIO(stream.getvalue()), source="batch_7.csv")
    )

    assert (settled.kind, settled.gross_amount, settled.net_amount) == (RecordKind.SETTLED, 4900, 4900 - 37)
    assert dict(settled.fees) == {"commission": 10, "markup": 9, "scheme_fees": 4, "interchange": 14}
    assert settled.provider_reference == psp
    assert settled.created_at == WHEN
    assert (refunded.kind, refunded.gross_amount, refunded.net_amount) == (RecordKind.REFUNDED, -1000, -1000)
    assert refunded.secondary_reference == reference("R", "refund")
    assert (fee.kind, fee.gross_amount, fee.net_amount) == (RecordKind.FEE, 0, -250)
    assert (payout.kind, payout.net_amount, paid) == (RecordKind.PAYOUT, -paid, 4900 - 37 - 1000 - 250)
    assert writer.lines == 5
    checks = Payouts()
    for record in (settled, refunded, fee, payout):
        checks.add(record, record.batch)
    assert [check.balances for check in checks.checks()] == [True]


def test_a_stripe_payout_written_off_by_an_amount_reads_back_unbalanced_by_it() -> None:
    stream = io.StringIO(newline="")
    writer = StripePayoutReconciliationWriter(stream)
    charge = ReportItem(
        RecordKind.SETTLED, 2500, "EUR", WHEN, "pi_123", None, "exec-2", fees={STRIPE_FEE: stripe_card_fee(2500)}
    )
    writer.write(charge, payout="po_1")
    writer.write(ReportItem(RecordKind.REFUNDED, 900, "EUR", WHEN, "pi_123", "re_1", "exec-2"), payout="po_1")
    writer.payout("po_1", "EUR", off_by=-500, when=WHEN)

    settled, refunded, payout = _records(
        StripeItemizedPayoutReconciliation.parse(io.StringIO(stream.getvalue()), source="payouts.csv")
    )

    assert (settled.gross_amount, dict(settled.fees), settled.net_amount) == (2500, {STRIPE_FEE: 63}, 2437)
    assert (settled.provider_reference, settled.merchant_reference, settled.batch) == ("pi_123", "exec-2", "po_1")
    # Stripe's charge_id names the charge on its refund rows too; the refund's own id is the source_id.
    assert (refunded.kind, refunded.gross_amount, refunded.secondary_reference) == (RecordKind.REFUNDED, -900, "ch_123")
    assert (payout.kind, payout.net_amount) == (RecordKind.PAYOUT, -(2437 - 900 - 500))
    checks = Payouts()
    for record in (settled, refunded, payout):
        checks.add(record, record.batch)
    (check,) = checks.checks()
    assert (check.computed_net, check.reported, check.difference) == (1537, 1037, -500)


def test_references_look_like_a_providers_and_never_like_a_card_number() -> None:
    psp = reference("Q", "anything")

    assert len(psp) == 16
    assert psp == reference("Q", "anything")
    assert not psp.isdigit()
    assert reference("po_", "day", length=27).startswith("po_")
