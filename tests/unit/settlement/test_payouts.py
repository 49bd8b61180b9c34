"""Payouts: per batch, the items' net amounts against the payout line, in each provider's sign convention.

Adyen writes its MerchantPayout in Net Debit (NC); Stripe's `payout` row has a negative net. Both are money leaving
the balance for the bank, so a balanced batch's items add up to minus the payout row's net.
"""

from __future__ import annotations

from collections.abc import Sequence

from billing.settlement.outcome import Discrepancy, DiscrepancyClass, PayoutCheck, ReportSummary
from billing.settlement.reconciliation.engine import Reconciler
from billing.settlement.reconciliation.reading import SettlementFile
from tests.unit.settlement.reconciliation_factories import (
    AFTER_THE_DAY,
    PERIOD,
    FakeLookup,
    adyen_file,
    adyen_row,
    file_of,
    ours,
    stripe_file,
    stripe_row,
)

C = DiscrepancyClass
ADYEN_SOURCE = "settlements/adyen/2026-04-10/settlement_detail_report_batch_42.csv"


def run(provider: str, *files: SettlementFile) -> tuple[ReportSummary, list[Discrepancy]]:
    lookup = FakeLookup([ours("8815", amount=10000), ours("pi_1", provider="stripe", amount=10000)])
    with Reconciler(lookup).run(provider=provider, period=PERIOD, files=files, generated_at=AFTER_THE_DAY) as done:
        return done.summary, [d for d in done.discrepancies() if d.discrepancy_class is C.PAYOUT_MISMATCH]


def adyen_batch(payout: str, *, batch: str = "42", currency: str = "EUR") -> list[dict[str, str]]:
    cells = {"Batch Number": batch, "Net Currency": currency}
    return [
        adyen_row("Settled", "8815", gross="100.00", net="98.50", cells=cells),
        adyen_row("Refunded", "8816", gross="-20.00", net="-20.00", modification="r1", cells=cells),
        adyen_row("Fee", "", net="-0.50", cells=cells),
        adyen_row("MerchantPayout", "", net=payout, cells=cells),
    ]


def only_check(summary: ReportSummary) -> PayoutCheck:
    (check,) = summary.payouts
    return check


def test_an_adyen_batch_whose_items_add_up_to_its_merchant_payout_balances() -> None:
    summary, mismatches = run("adyen", file_of(ADYEN_SOURCE, adyen_file(*adyen_batch("-78.00"))))

    check = only_check(summary)
    assert (check.batch, check.currency, check.computed_net, check.reported, check.items) == (
        "42",
        "EUR",
        7800,
        7800,
        3,
    )
    assert (check.balances, check.difference, check.line_number, summary.payouts_balance, mismatches) == (
        True,
        0,
        5,
        True,
        [],
    )


def test_an_adyen_batch_that_does_not_add_up_is_payout_mismatch_with_both_figures() -> None:
    summary, mismatches = run("adyen", file_of(ADYEN_SOURCE, adyen_file(*adyen_batch("-79.00"))))

    (item,) = mismatches
    assert (only_check(summary).difference, summary.payouts_balance) == (100, False)
    assert (item.expected_amount, item.reported_amount, item.expected_currency, item.batch) == (7800, 7900, "EUR", "42")
    assert (item.source, item.line_number, item.record_kind) == (ADYEN_SOURCE, 5, "payout")
    assert item.detail == "batch 42: 3 items net 78.00 EUR, payout 79.00 EUR (difference 1.00 EUR)"


def test_a_stripe_payout_row_balances_against_its_items_nets() -> None:
    rows = [
        stripe_row("charge", "pi_1", gross="100.00", fee="3.20"),
        stripe_row("refund", "pi_2", gross="-10.00"),
        stripe_row("payout", "", gross="-86.80", payout="po_1"),
    ]

    summary, mismatches = run("stripe", file_of("settlements/stripe/2026-04-10.csv", stripe_file(*rows)))

    check = only_check(summary)
    assert (check.batch, check.computed_net, check.reported, check.balances, mismatches) == (
        "po_1",
        8680,
        8680,
        True,
        [],
    )


def test_a_stripe_payout_row_of_another_amount_is_payout_mismatch() -> None:
    rows = [stripe_row("charge", "pi_1", gross="100.00", fee="3.20"), stripe_row("payout", "", gross="-90.00")]

    _, (item,) = run("stripe", file_of("settlements/stripe/2026-04-10.csv", stripe_file(*rows)))

    assert (item.expected_amount, item.reported_amount, item.batch) == (9680, 9000, "po_1")


def test_a_batch_without_a_payout_line_is_listed_unreported_and_is_no_mismatch() -> None:
    rows = [stripe_row("charge", "pi_1", gross="100.00", fee="3.20")]

    summary, mismatches = run("stripe", file_of("settlements/stripe/2026-04-10.csv", stripe_file(*rows)))

    check = only_check(summary)
    assert (check.reported, check.computed_net, check.balances, mismatches) == (None, 9680, None, [])


def test_a_payout_line_without_items_is_a_mismatch_unless_it_pays_out_nothing() -> None:
    _, (item,) = run("adyen", file_of(ADYEN_SOURCE, adyen_file(adyen_row("MerchantPayout", "", net="-5.00"))))
    nothing, none = run("adyen", file_of(ADYEN_SOURCE, adyen_file(adyen_row("MerchantPayout", "", net="0.00"))))

    assert item.detail == "batch 42: payout of 5.00 EUR with no items in the files read"
    assert (only_check(nothing).balances, none) == (True, [])


def test_a_batch_is_checked_per_net_currency_and_batches_come_in_number_order() -> None:
    content = adyen_file(
        *adyen_batch("-78.00", batch="10"),
        *adyen_batch("-78.00", batch="9", currency="USD"),
        *adyen_batch("-77.00", batch="9"),
    )

    summary, mismatches = run("adyen", file_of(ADYEN_SOURCE, content))

    assert [(p.batch, p.currency, p.balances) for p in summary.payouts] == [
        ("9", "EUR", False),
        ("9", "USD", True),
        ("10", "EUR", True),
    ]
    assert [(m.batch, m.reported_currency) for m in mismatches] == [("9", "EUR")]


def test_an_adyen_file_without_batch_numbers_takes_the_batch_from_its_name() -> None:
    rows = [{**row, "Batch Number": ""} for row in adyen_batch("-78.00")]

    summary, _ = run("adyen", file_of(ADYEN_SOURCE, adyen_file(*rows)))

    assert (only_check(summary).batch, only_check(summary).balances) == ("42", True)


def test_batches_spread_over_two_files_are_summed_together() -> None:
    first, second = adyen_batch("-78.00")[:2], adyen_batch("-78.00")[2:]
    files: Sequence[SettlementFile] = (
        file_of("settlements/adyen/2026-04-10/a.csv", adyen_file(*first)),
        file_of("settlements/adyen/2026-04-10/b.csv", adyen_file(*second)),
    )

    summary, mismatches = run("adyen", *files)

    assert (only_check(summary).balances, only_check(summary).source, mismatches) == (
        True,
        "settlements/adyen/2026-04-10/b.csv",
        [],
    )
