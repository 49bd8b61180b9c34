"""Reconciling Adyen's and Stripe's real report rows: references, reversals by amount, fee bands, unmapped types.

Each test writes a file in the provider's own layout and runs it through the parser and the engine, against
executions held by a stand-in for the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import uuid4

import pytest

from billing.domain.status import ExecutionStatus
from billing.settlement.outcome import Discrepancy, DiscrepancyClass, ReportSummary
from billing.settlement.reconciliation.engine import Reconciler
from billing.settlement.reconciliation.fee_bands import FeeBand
from billing.settlement.reconciliation.ours import OurExecution
from tests.unit.settlement.reconciliation_factories import (
    AFTER_THE_DAY,
    NOON,
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
STRIPE_SOURCE = "settlements/stripe/2026-04-10.csv"
LAST_MONTH = NOON - timedelta(days=30)


def run(
    provider: str, content: bytes, executions: Sequence[OurExecution], bands: Sequence[FeeBand] = ()
) -> tuple[ReportSummary, list[Discrepancy]]:
    source = ADYEN_SOURCE if provider == "adyen" else STRIPE_SOURCE
    lookup = FakeLookup(list(executions), list(bands))
    with Reconciler(lookup).run(
        provider=provider, period=PERIOD, files=[file_of(source, content)], generated_at=AFTER_THE_DAY
    ) as done:
        return done.summary, list(done.discrepancies())


def found(provider: str, content: bytes, *executions: OurExecution, bands: Sequence[FeeBand] = ()) -> list[Discrepancy]:
    return [d for d in run(provider, content, executions, bands)[1] if d.discrepancy_class is not C.PAYOUT_MISMATCH]


def classes(items: Sequence[Discrepancy]) -> list[tuple[int | None, DiscrepancyClass]]:
    return sorted(((d.line_number, d.discrepancy_class) for d in items), key=lambda x: (x[0] or 0, x[1].value))


def matched(provider: str, content: bytes, *executions: OurExecution) -> int:
    return run(provider, content, executions)[0].counts[C.MATCHED]


# --- references -----------------------------------------------------------------------------------------------------


def test_an_adyen_settled_row_matches_the_execution_its_psp_reference_names() -> None:
    payment = ours("8815", amount=1999)
    content = adyen_file(adyen_row("Settled", "8815", gross="19.99", net="19.57"))

    assert (found("adyen", content, payment), matched("adyen", content, payment)) == ([], 1)


def test_a_stripe_charge_matches_the_execution_its_payment_intent_names() -> None:
    payment = ours("pi_1", provider="stripe", amount=1999)
    content = stripe_file(stripe_row("charge", "pi_1", gross="19.99", fee="0.54"))

    assert (found("stripe", content, payment), matched("stripe", content, payment)) == ([], 1)


def test_a_stripe_row_without_a_payment_intent_falls_back_to_the_execution_id_in_its_metadata() -> None:
    payment = ours("pi_1", provider="stripe", amount=1999)
    content = stripe_file(stripe_row("charge", "", gross="19.99", execution_id=str(payment.execution_id)))

    assert (found("stripe", content, payment), matched("stripe", content, payment)) == ([], 1)


def test_an_execution_we_never_stored_a_reference_for_is_found_by_the_id_the_provider_echoes() -> None:
    # The write of the pspReference was lost: the execution is still ours, and the row says which one.
    lost = ours(None, amount=1999, status=ExecutionStatus.PROCESSING, finished_at=None)
    content = adyen_file(
        adyen_row("Settled", "8815", gross="19.99", net="19.99", merchant_reference=str(lost.execution_id))
    )

    (item,) = found("adyen", content, lost)

    assert (item.discrepancy_class, item.execution_id) == (C.STATUS_MISMATCH, lost.execution_id)


def test_an_adyen_payment_known_by_our_own_reference_matches_its_psp_reference_row() -> None:
    # No pspReference came back at submission (3-D Secure before authorisation): we stored our execution id.
    payment = ours(None, amount=1999)
    payment = ours(str(payment.execution_id), execution_id=payment.execution_id, tenant_id=payment.tenant_id)
    content = adyen_file(
        adyen_row("Settled", "8815", gross="19.99", net="19.99", merchant_reference=str(payment.execution_id))
    )

    assert (found("adyen", content, payment), matched("adyen", content, payment)) == ([], 1)


def test_a_row_whose_metadata_names_an_execution_recorded_under_another_reference_is_missing_internally() -> None:
    first = ours("pi_first", provider="stripe", amount=1999, finished_at=LAST_MONTH)
    content = stripe_file(stripe_row("charge", "pi_second", gross="19.99", execution_id=str(first.execution_id)))

    (item,) = found("stripe", content, first)

    assert (item.discrepancy_class, item.execution_id, item.provider_reference) == (
        C.MISSING_INTERNALLY,
        first.execution_id,
        "pi_second",
    )
    assert "recorded under pi_first (a second charge?)" in item.detail


def test_an_unknown_reference_is_missing_internally_naming_the_echoed_id() -> None:
    echoed = uuid4()
    content = adyen_file(adyen_row("Settled", "8815", gross="19.99", net="19.99", merchant_reference=str(echoed)))

    (item,) = found("adyen", content)

    assert (item.discrepancy_class, item.reported_amount, item.reported_currency) == (
        C.MISSING_INTERNALLY,
        1999,
        "EUR",
    )
    assert item.detail == f"no adyen execution carries this reference or the id {echoed}"


def test_a_stripe_reference_two_tenants_carry_is_ambiguous() -> None:
    a, b = ours("pi_1", provider="stripe"), ours("pi_1", provider="stripe")
    content = stripe_file(stripe_row("charge", "pi_1", gross="19.99"))

    assert classes(found("stripe", content, a, b)) == [(2, C.AMBIGUOUS_REFERENCE)]


def test_a_stripe_charge_in_another_balance_currency_is_compared_in_the_customers_currency() -> None:
    dollars = ours("pi_1", provider="stripe", amount=2500, currency="USD")
    row = stripe_row(
        "charge", "pi_1", gross="23.10", fee="0.70", customer_facing_amount="25.00", customer_facing_currency="usd"
    )

    assert (found("stripe", stripe_file(row), dollars), matched("stripe", stripe_file(row), dollars)) == ([], 1)


def test_an_adyen_settled_row_of_another_amount_and_currency_says_which() -> None:
    payment = ours("8815", amount=1999)
    other_amount = adyen_file(adyen_row("Settled", "8815", gross="20.99", net="20.57"))
    other_currency = adyen_file(
        adyen_row(
            "Settled", "8815", gross="19.99", net="18.00", cells={"Gross Currency": "USD", "Exchange Rate": "0.9"}
        )
    )

    (amount,) = found("adyen", other_amount, payment)
    (currency,) = found("adyen", other_currency, payment)

    assert (amount.discrepancy_class, amount.expected_amount, amount.reported_amount) == (C.AMOUNT_MISMATCH, 1999, 2099)
    assert (currency.discrepancy_class, currency.detail) == (C.CURRENCY_MISMATCH, "provider USD, execution EUR")


# --- reversals by amount --------------------------------------------------------------------------------------------


def test_several_partial_refunds_of_one_payment_each_match_their_own_recorded_refund() -> None:
    payment = ours("8815", amount=5000, finished_at=LAST_MONTH, reversals=[("refund", 1000), ("refund", 1500)])
    content = adyen_file(
        adyen_row("Refunded", "8815", gross="-15.00", net="-15.00", modification="r2"),
        adyen_row("Refunded", "8815", gross="-10.00", net="-10.00", modification="r1"),
    )

    assert (found("adyen", content, payment), matched("adyen", content, payment)) == ([], 2)


def test_two_refunds_of_the_same_amount_match_two_recorded_ones_and_a_third_is_missing() -> None:
    payment = ours("8815", amount=5000, finished_at=LAST_MONTH, reversals=[("refund", 1000), ("refund", 1000)])
    content = adyen_file(
        *(adyen_row("Refunded", "8815", gross="-10.00", net="-10.00", modification=f"r{n}") for n in (1, 2, 3))
    )

    (item,) = found("adyen", content, payment)

    assert (item.line_number, item.discrepancy_class) == (4, C.REVERSAL_MISSING)
    assert item.detail == (
        "provider Refunded 10.00 EUR; no refund of that amount recorded (the recorded ones, 10.00 EUR, 10.00 EUR, "
        "match other lines)"
    )


def test_reversals_in_the_files_never_add_up_to_more_than_the_payment() -> None:
    # Refunded and charged back: the customer got the money twice, though each reversal is recorded.
    payment = ours("8815", amount=1999, finished_at=LAST_MONTH, reversals=[("refund", 1999), ("chargeback", 1999)])
    content = adyen_file(
        adyen_row("Refunded", "8815", gross="-19.99", net="-19.99", modification="r1"),
        adyen_row("Chargeback", "8815", gross="-19.99", net="-19.99", modification="cb1"),
    )

    (item,) = found("adyen", content, payment)

    assert (item.line_number, item.discrepancy_class) == (3, C.REVERSAL_MISSING)
    assert item.detail == (
        "provider Chargeback 19.99 EUR: the files' reversals of this payment come to 39.98 EUR, over its 19.99 EUR"
    )


def test_a_chargeback_its_reversal_and_a_second_chargeback_each_match_their_own_kind() -> None:
    payment = ours(
        "8815",
        amount=1999,
        finished_at=LAST_MONTH,
        reversals=[("chargeback", 1999), ("chargeback_reversed", 1999), ("second_chargeback", 1999)],
    )
    content = adyen_file(
        adyen_row("Chargeback", "8815", gross="-19.99", net="-19.99", modification="d1"),
        adyen_row("ChargebackReversed", "8815", gross="19.99", net="19.99", modification="d1"),
        adyen_row("SecondChargeback", "8815", gross="-19.99", net="-19.99", modification="d1"),
    )

    assert (found("adyen", content, payment), matched("adyen", content, payment)) == ([], 3)


def test_a_stripe_dispute_and_its_reversal_match_the_recorded_chargeback_and_reversal() -> None:
    payment = ours(
        "pi_1",
        provider="stripe",
        finished_at=LAST_MONTH,
        reversals=[("chargeback", 1999), ("chargeback_reversed", 1999)],
    )
    content = stripe_file(
        stripe_row("dispute", "pi_1", gross="-19.99", fee="15.00"),
        stripe_row("dispute_reversal", "pi_1", gross="19.99", fee="-15.00"),
    )

    assert (found("stripe", content, payment), matched("stripe", content, payment)) == ([], 2)


def test_a_chargeback_reversal_nobody_recorded_is_reversal_missing() -> None:
    payment = ours("8815", finished_at=LAST_MONTH, reversals=[("chargeback", 1999)])
    content = adyen_file(
        adyen_row("Chargeback", "8815", gross="-19.99", net="-19.99", modification="d1"),
        adyen_row("ChargebackReversed", "8815", gross="19.99", net="19.99", modification="d1"),
    )

    assert classes(found("adyen", content, payment)) == [(3, C.REVERSAL_MISSING)]


def test_a_reversal_recorded_before_amounts_existed_matches_one_line_of_any_amount_once() -> None:
    payment = ours("8815", amount=5000, finished_at=LAST_MONTH, reversals=[("unspecified", None)])
    content = adyen_file(
        adyen_row("Refunded", "8815", gross="-12.00", net="-12.00", modification="r1"),
        adyen_row("Refunded", "8815", gross="-13.00", net="-13.00", modification="r2"),
    )

    assert classes(found("adyen", content, payment)) == [(3, C.REVERSAL_MISSING)]


def test_a_refund_row_that_credits_money_is_an_amount_mismatch() -> None:
    payment = ours("8815", finished_at=LAST_MONTH, reversals=[("refund", 1999)])
    content = adyen_file(adyen_row("Refunded", "8815", gross="19.99", net="19.99", modification="r1"))

    (item,) = found("adyen", content, payment)

    assert (item.discrepancy_class, item.detail) == (
        C.AMOUNT_MISMATCH,
        "provider Refunded moves 19.99 EUR; a refund takes money back",
    )


def test_a_refund_of_a_payment_that_never_completed_is_a_status_mismatch() -> None:
    failed = ours("8815", status=ExecutionStatus.FAILED)
    content = adyen_file(adyen_row("Refunded", "8815", gross="-19.99", net="-19.99", modification="r1"))

    (item,) = found("adyen", content, failed)

    assert (item.discrepancy_class, item.detail) == (C.STATUS_MISMATCH, "provider says Refunded, execution is failed")


def test_a_refund_in_another_currency_than_its_payment_is_a_currency_mismatch() -> None:
    payment = ours("8815", finished_at=LAST_MONTH, reversals=[("refund", 1999)])
    content = adyen_file(
        adyen_row("Refunded", "8815", gross="-19.99", net="-19.99", modification="r1", cells={"Gross Currency": "GBP"})
    )

    assert classes(found("adyen", content, payment)) == [(2, C.CURRENCY_MISMATCH)]


# --- duplicates -----------------------------------------------------------------------------------------------------


def test_the_same_stripe_row_listed_twice_is_a_duplicate_and_matched_once() -> None:
    payment = ours("pi_1", provider="stripe")
    charge = stripe_row("charge", "pi_1", gross="19.99", transaction="txn_1")
    content = stripe_file(charge, charge)

    (item,) = found("stripe", content, payment)

    assert (item.line_number, item.discrepancy_class, item.execution_id) == (
        3,
        C.DUPLICATE_IN_FILE,
        payment.execution_id,
    )
    assert item.detail == f"charge already listed in {STRIPE_SOURCE} line 2"
    assert matched("stripe", content, payment) == 1


def test_a_duplicated_refund_row_does_not_use_a_second_recorded_refund() -> None:
    payment = ours("8815", amount=5000, finished_at=LAST_MONTH, reversals=[("refund", 1000), ("refund", 1000)])
    refund = adyen_row("Refunded", "8815", gross="-10.00", net="-10.00", modification="r1")

    assert classes(found("adyen", adyen_file(refund, refund), payment)) == [(3, C.DUPLICATE_IN_FILE)]


def test_two_partial_refunds_of_one_amount_at_different_times_are_not_duplicates() -> None:
    payment = ours("pi_1", provider="stripe", amount=5000, finished_at=LAST_MONTH, reversals=[("refund", 500)] * 2)
    content = stripe_file(
        stripe_row("refund", "pi_1", gross="-5.00", created_utc="2026-04-10 09:00:00"),
        stripe_row("refund", "pi_1", gross="-5.00", created_utc="2026-04-10 10:00:00"),
    )

    assert (found("stripe", content, payment), matched("stripe", content, payment)) == ([], 2)


# --- fee bands ------------------------------------------------------------------------------------------------------


def band(payment: OurExecution, method: str = "visa", **overrides: int) -> FeeBand:
    fields = {"min_basis_points": 100, "max_basis_points": 250, "fixed": 10} | overrides
    return FeeBand(payment.tenant_id, payment.provider, method, payment.currency, **fields)


def adyen_with_fees(*, markup: str, interchange: str = "0.20", method: str = "visa") -> bytes:
    fees = {"Markup (NC)": markup, "Interchange (NC)": interchange}
    return adyen_file(
        adyen_row("Settled", "8815", gross="100.00", net="99.00", fees=fees, cells={"Payment Method": method})
    )


def test_fees_inside_the_tenants_band_are_matched() -> None:
    payment = ours("8815", amount=10000)
    # 100.00 EUR at 100-250 bp + 0.10: 1.10 to 2.60 EUR.
    assert found("adyen", adyen_with_fees(markup="0.90"), payment, bands=[band(payment)]) == []
    assert found("adyen", adyen_with_fees(markup="2.40"), payment, bands=[band(payment)]) == []


@pytest.mark.parametrize(("markup", "bound"), [("0.80", 110), ("2.41", 260)])
def test_fees_outside_the_tenants_band_are_fee_out_of_range_with_the_bound_and_the_fees(
    markup: str, bound: int
) -> None:
    payment = ours("8815", amount=10000)

    (item,) = found("adyen", adyen_with_fees(markup=markup), payment, bands=[band(payment)])

    fees = int(markup.replace(".", "")) + 20
    assert (item.discrepancy_class, item.expected_amount, item.reported_amount, item.payment_method) == (
        C.FEE_OUT_OF_RANGE,
        bound,
        fees,
        "visa",
    )
    assert item.detail.endswith("(visa band 100-250 bp + 0.10 EUR)")


def test_a_band_for_any_method_covers_methods_without_their_own() -> None:
    payment = ours("8815", amount=10000)
    bands = [band(payment, "*", max_basis_points=120), band(payment, "mc", max_basis_points=900)]

    (visa,) = found("adyen", adyen_with_fees(markup="2.00"), payment, bands=bands)

    assert visa.discrepancy_class is C.FEE_OUT_OF_RANGE
    assert found("adyen", adyen_with_fees(markup="2.00", method="mc"), payment, bands=bands) == []


def test_without_a_band_fees_are_not_checked() -> None:
    payment = ours("8815", amount=10000)
    other_tenant = band(ours("8815", amount=10000))

    assert found("adyen", adyen_with_fees(markup="50.00"), payment, bands=[other_tenant]) == []


def test_a_fee_out_of_range_beside_an_amount_mismatch_is_kept_in_also() -> None:
    payment = ours("8815", amount=9000)

    (item,) = found("adyen", adyen_with_fees(markup="9.00"), payment, bands=[band(payment)])

    assert (item.discrepancy_class, item.also, item.expected_amount) == (
        C.AMOUNT_MISMATCH,
        (C.FEE_OUT_OF_RANGE,),
        9000,
    )


def test_stripes_fee_is_held_to_the_band_of_its_payment_method() -> None:
    payment = ours("pi_1", provider="stripe", amount=10000)
    content = stripe_file(stripe_row("charge", "pi_1", gross="100.00", fee="3.00"))

    (item,) = found("stripe", content, payment, bands=[band(payment, "card")])

    assert (item.discrepancy_class, item.expected_amount, item.reported_amount) == (C.FEE_OUT_OF_RANGE, 260, 300)


def test_fee_band_bounds_round_outwards() -> None:
    visa = FeeBand(uuid4(), "adyen", "visa", "EUR", min_basis_points=125, max_basis_points=125, fixed=0)

    assert visa.bounds(999) == (12, 13)  # 12.4875 minor units either way
    with pytest.raises(ValueError, match="min_basis_points"):
        FeeBand(uuid4(), "adyen", "visa", "EUR", min_basis_points=300, max_basis_points=200, fixed=0)


# --- unmapped and non-item rows -------------------------------------------------------------------------------------


def test_a_row_of_a_type_we_do_not_map_is_reported_never_dropped() -> None:
    content = adyen_file(adyen_row("SomethingNew", "", net="-1.23"))

    (item,) = found("adyen", content)

    assert (item.discrepancy_class, item.record_kind, item.reported_amount, item.batch) == (
        C.UNMAPPED_TYPE,
        "other",
        -123,
        "42",
    )
    assert item.detail == "type 'SomethingNew' is not one we map; counted in its batch's net, not matched"


def test_fee_payout_and_adjustment_rows_are_not_matched_to_executions() -> None:
    content = adyen_file(
        adyen_row("Fee", "", net="-1.00"),
        adyen_row("Balancetransfer", "", net="5.00"),
        adyen_row("MerchantPayout", "", net="-4.00"),
    )

    summary, items = run("adyen", content, [])

    assert (items, summary.counts[C.MATCHED]) == ([], 0)
