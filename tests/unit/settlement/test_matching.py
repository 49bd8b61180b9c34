"""Matching the engine's own (sandbox) settlement lines to executions: one class per item, nothing falls through.

The sandbox format runs through the same reconciliation engine as Adyen's and Stripe's reports; these are the
rules that format has always been held to, now proved on that engine.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.domain.reversals import ReversalKind
from billing.domain.status import ExecutionStatus
from billing.settlement.files import SettlementStatus
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.reconciliation.matching import Candidates
from billing.settlement.reconciliation.ours import OurExecution
from tests.unit.settlement.factories import DAY, NOON, line, reconcile, record

S = ExecutionStatus
P = SettlementStatus
C = DiscrepancyClass


def test_same_reference_amount_currency_and_outcome_is_matched() -> None:
    done = reconcile([line("sbx_a")], [record("sbx_a")])

    assert (done.discrepancies, done.matched, done.summary.discrepancy_count) == ([], 1, 0)


def test_a_different_amount_is_amount_mismatch_with_both_figures_and_the_difference() -> None:
    ours = record("sbx_a", amount=1999)

    item = reconcile([line("sbx_a", amount=2000)], [ours]).only()

    assert item.discrepancy_class is C.AMOUNT_MISMATCH
    assert item.detail == "provider 20.00 EUR, execution 19.99 EUR (difference 0.01 EUR)"
    assert (item.expected_amount, item.reported_amount, item.execution_id) == (1999, 2000, ours.execution_id)
    assert (item.source, item.line_number, item.record_kind) == ("settlements/sandbox/2026-04-10.csv", 2, "settled")


def test_amounts_are_compared_in_minor_units_of_zero_and_three_decimal_currencies() -> None:
    yen = reconcile([line("sbx_y", amount=1000, currency="JPY")], [record("sbx_y", amount=1001, currency="JPY")])
    dinar = reconcile([line("sbx_k", amount=1500, currency="KWD")], [record("sbx_k", amount=1500, currency="KWD")])

    assert yen.only().detail == "provider 1000 JPY, execution 1001 JPY (difference -1 JPY)"
    assert (dinar.discrepancies, dinar.matched) == ([], 1)


def test_a_different_currency_is_currency_mismatch_and_amounts_are_not_compared() -> None:
    item = reconcile([line("sbx_a", currency="USD", amount=5)], [record("sbx_a", currency="EUR")]).only()

    assert (item.discrepancy_class, item.also) == (C.CURRENCY_MISMATCH, ())
    assert item.detail == "provider USD, execution EUR"


@pytest.mark.parametrize(
    ("settled", "ours", "shown"),
    [
        (P.PAID, S.FAILED, "failed"),
        (P.PAID, S.PENDING, "pending (awaiting settlement)"),
        (P.PAID, S.PROCESSING, "processing"),
        (P.PAID, S.CANCELED, "canceled"),
        (P.PAID, S.CREATED, "created"),
        (P.FAILED, S.COMPLETED, "completed"),
        (P.FAILED, S.PENDING, "pending (awaiting settlement)"),
        (P.FAILED, S.PROCESSING, "processing"),
        (P.CHARGEBACK, S.FAILED, "failed"),
        (P.REFUNDED, S.PENDING, "pending (awaiting settlement)"),
    ],
)
def test_provider_outcome_we_did_not_record_is_status_mismatch(
    settled: SettlementStatus, ours: ExecutionStatus, shown: str
) -> None:
    item = reconcile([line("sbx_a", status=settled)], [record("sbx_a", status=ours, finished_at=None)]).only()

    assert item.discrepancy_class is C.STATUS_MISMATCH
    assert item.detail == f"provider says {settled}, execution is {shown}"


@pytest.mark.parametrize(
    ("settled", "ours"),
    [(P.PAID, S.COMPLETED), (P.FAILED, S.FAILED)],
)
def test_a_payment_agrees_when_our_status_is_what_the_provider_status_implies(
    settled: SettlementStatus, ours: ExecutionStatus
) -> None:
    assert reconcile([line("sbx_a", status=settled)], [record("sbx_a", status=ours)]).discrepancies == []


def test_a_later_refund_does_not_undo_that_the_payment_settled() -> None:
    refunded = record("sbx_a", reversals=[("refund", 1999)])

    assert reconcile([line("sbx_a")], [refunded]).discrepancies == []


def test_money_that_went_back_without_us_knowing_is_reversal_missing() -> None:
    for status in (P.REFUNDED, P.CHARGEBACK):
        item = reconcile([line("sbx_a", status=status)], [record("sbx_a", finished_at=NOON - timedelta(days=3))])

        assert item.only().discrepancy_class is C.REVERSAL_MISSING
        noun = "refund" if status is P.REFUNDED else "chargeback"
        assert item.only().detail == f"provider {status} 19.99 EUR; no {noun} of that amount recorded"


def test_several_differences_keep_the_first_as_class_and_the_others_in_also() -> None:
    item = reconcile([line("sbx_a", amount=1, status=P.FAILED)], [record("sbx_a", amount=2)]).only()

    assert (item.discrepancy_class, item.also) == (C.AMOUNT_MISMATCH, (C.STATUS_MISMATCH,))
    assert item.detail.endswith("; provider says failed, execution is completed")


def test_a_reference_we_do_not_know_is_missing_internally() -> None:
    item = reconcile([line("sbx_unknown")], [record("sbx_other", finished_at=NOON - timedelta(days=3))]).only()

    assert (item.discrepancy_class, item.execution_id, item.provider_reference) == (
        C.MISSING_INTERNALLY,
        None,
        "sbx_unknown",
    )
    assert item.detail == "no sandbox execution carries this reference"


def test_references_are_matched_within_their_provider_only() -> None:
    adyens = record("ref_1", provider="adyen", finished_at=None, status=S.PENDING)

    item = reconcile([line("ref_1")], [adyens]).only()

    assert item.discrepancy_class is C.MISSING_INTERNALLY


def test_a_reference_two_executions_carry_is_ambiguous_and_matched_to_neither() -> None:
    done = reconcile([line("sbx_a")], [record("sbx_a"), record("sbx_a")])

    # Listed, so neither execution is missing from the file; which one the line settles is for a human to say.
    item = done.only()
    assert (item.discrepancy_class, item.execution_id, item.detail) == (
        C.AMBIGUOUS_REFERENCE,
        None,
        "2 executions carry this reference",
    )


def test_an_execution_completed_in_the_period_and_listed_nowhere_is_missing_from_file() -> None:
    unlisted = record("sbx_gone", amount=1500, currency="KWD")

    done = reconcile([line("sbx_a")], [record("sbx_a"), unlisted])

    item = done.only()
    assert (done.matched, item.discrepancy_class) == (1, C.MISSING_FROM_FILE)
    assert (item.source, item.line_number, item.execution_id, item.provider_reference) == (
        None,
        None,
        unlisted.execution_id,
        "sbx_gone",
    )
    assert (item.expected_amount, item.expected_currency, item.reported_amount) == (1500, "KWD", None)
    assert item.detail == "completed 1.500 KWD; no sandbox file listed it"


@pytest.mark.parametrize(
    "ours",
    [
        record("sbx_x", status=S.COMPLETED, finished_at=NOON - timedelta(days=1)),  # completed before the period
        record("sbx_x", status=S.COMPLETED, finished_at=NOON + timedelta(days=1)),  # completed after it
        record("sbx_x", status=S.FAILED),  # nothing to settle
        record("sbx_x", status=S.PENDING, finished_at=None),  # not settled yet
        record("sbx_x", status=S.PROCESSING, finished_at=None),
    ],
)
def test_executions_not_completed_in_the_period_are_never_missing_from_file(ours: OurExecution) -> None:
    assert reconcile([], [ours]).discrepancies == []


def test_an_item_listed_in_the_look_back_days_is_not_missing_from_file() -> None:
    # A debit the provider settled yesterday that we learned of after midnight.
    earlier = line("sbx_late", day=DAY - timedelta(days=1))

    assert reconcile([], [record("sbx_late")], earlier=[earlier]).discrepancies == []


def test_a_refund_listing_does_not_list_its_payment() -> None:
    ours = record("sbx_a", reversals=[("refund", 500)])

    done = reconcile([line("sbx_a", amount=500, status=P.REFUNDED)], [ours])

    assert (done.classes(), done.matched) == ([C.MISSING_FROM_FILE], 1)


def test_the_same_reference_and_status_listed_twice_is_duplicate_in_file_pointing_at_the_first() -> None:
    ours = record("sbx_a")

    done = reconcile([line("sbx_a"), line("sbx_b"), line("sbx_a")], [ours, record("sbx_b")])

    item = done.only()
    assert (done.matched, item.discrepancy_class, item.line_number, item.execution_id) == (
        2,
        C.DUPLICATE_IN_FILE,
        4,
        ours.execution_id,
    )
    assert item.detail == "paid already listed in settlements/sandbox/2026-04-10.csv line 2"


def test_an_item_already_listed_in_the_look_back_days_is_a_duplicate() -> None:
    earlier = line("sbx_a", day=DAY - timedelta(days=1))

    item = reconcile([line("sbx_a")], [record("sbx_a")], earlier=[earlier]).only()

    assert item.discrepancy_class is C.DUPLICATE_IN_FILE
    assert item.detail == "paid already listed in settlements/sandbox/2026-04-09.csv line 2"


def test_a_payment_and_its_refund_on_the_same_day_are_two_items_not_a_duplicate() -> None:
    ours = record("sbx_a", reversals=[("refund", 1999)])

    done = reconcile([line("sbx_a"), line("sbx_a", status=P.REFUNDED)], [ours])

    assert (done.discrepancies, done.matched) == ([], 2)


def test_a_chargeback_for_an_old_payment_matches_the_execution_loaded_by_reference() -> None:
    months_ago = record("sbx_old", reversals=[("chargeback", 1999)], finished_at=NOON - timedelta(days=90))

    done = reconcile([line("sbx_old", status=P.CHARGEBACK)], [months_ago])

    assert (done.discrepancies, done.matched) == ([], 1)


def test_executions_found_twice_count_once() -> None:
    ours = record("sbx_a")

    candidates = Candidates.of([ours, ours])

    assert (candidates.by_reference["sbx_a"], candidates.by_id[ours.execution_id]) == ([ours], [ours])


def test_every_line_gets_exactly_one_class_and_the_counts_add_up() -> None:
    lines = [
        line("sbx_ok"),
        line("sbx_amount", amount=1),
        line("sbx_unknown"),
        line("sbx_ok"),
        line("sbx_status", status=P.FAILED),
    ]
    records = [record("sbx_ok"), record("sbx_amount"), record("sbx_status"), record("sbx_unlisted")]

    done = reconcile(lines, records)

    assert [(d.discrepancy_class, d.line_number) for d in done.discrepancies] == [
        (C.MISSING_INTERNALLY, 4),
        (C.MISSING_FROM_FILE, None),
        (C.STATUS_MISMATCH, 6),
        (C.AMOUNT_MISMATCH, 3),
        (C.DUPLICATE_IN_FILE, 5),
    ]
    assert sum(done.summary.counts.values()) == len(lines) + 1
    assert done.matched == 1


def test_a_partial_refund_line_matches_the_recorded_refund_of_its_amount() -> None:
    ours = record("sbx_a", reversals=[("refund", 500), ("refund", 700)], finished_at=NOON - timedelta(days=2))
    refunds = [
        line("sbx_a", amount=700, status=P.REFUNDED, settled_at=NOON),
        line("sbx_a", amount=500, status=P.REFUNDED, settled_at=NOON + timedelta(hours=1)),
    ]

    done = reconcile(refunds, [ours])

    assert (done.discrepancies, done.matched) == ([], 2)


def test_a_refund_line_of_an_amount_no_refund_has_is_a_reversal_amount_mismatch() -> None:
    ours = record("sbx_a", reversals=[("refund", 500)], finished_at=NOON - timedelta(days=2))

    item = reconcile([line("sbx_a", amount=600, status=P.REFUNDED)], [ours]).only()

    assert item.discrepancy_class is C.REVERSAL_AMOUNT_MISMATCH
    assert item.detail == "provider refunded 6.00 EUR, recorded: 5.00 EUR"
    assert (item.expected_amount, item.reported_amount) == (500, 600)


def test_a_chargeback_line_is_matched_against_chargebacks_not_refunds() -> None:
    earlier = NOON - timedelta(days=30)
    refunded = record("sbx_a", reversals=[("refund", 1999)], finished_at=earlier)
    partial = record("sbx_b", reversals=[(ReversalKind.CHARGEBACK.value, 900)], finished_at=earlier)

    done = reconcile([line("sbx_a", status=P.CHARGEBACK), line("sbx_b", status=P.CHARGEBACK)], [refunded, partial])

    assert [(d.provider_reference, d.discrepancy_class) for d in done.discrepancies] == [
        ("sbx_a", C.REVERSAL_MISSING),
        ("sbx_b", C.REVERSAL_AMOUNT_MISMATCH),
    ]
