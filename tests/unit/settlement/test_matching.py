"""Matching settlement lines to executions: one class per item, every class reachable, nothing falls through."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.domain.status import ExecutionStatus
from billing.settlement.files import SettlementLine, SettlementStatus
from billing.settlement.matching import Classified, InternalRecord, MatchClass, match_settlement, status_agrees
from tests.unit.settlement.factories import DAY, NOON, PERIOD, line, record

S = ExecutionStatus
P = SettlementStatus


def classify(
    lines: list[SettlementLine], records: list[InternalRecord], earlier: list[SettlementLine] | None = None
) -> list[Classified]:
    return match_settlement(lines, records, period=PERIOD, earlier_lines=earlier or [])


def only(items: list[Classified]) -> Classified:
    assert len(items) == 1, items
    return items[0]


def test_same_reference_amount_currency_and_outcome_is_matched() -> None:
    ours = record("sbx_a")

    item = only(classify([line("sbx_a")], [ours]))

    assert (item.match_class, item.record, item.also, item.is_discrepancy) == (MatchClass.MATCHED, ours, (), False)


def test_a_different_amount_is_amount_mismatch_with_both_figures_and_the_difference() -> None:
    item = only(classify([line("sbx_a", amount=2000)], [record("sbx_a", amount=1999)]))

    assert item.match_class is MatchClass.AMOUNT_MISMATCH
    assert item.detail == "provider 20.00 EUR, execution 19.99 EUR (difference 0.01 EUR)"


def test_amounts_are_compared_in_minor_units_of_zero_and_three_decimal_currencies() -> None:
    yen = only(classify([line("sbx_y", amount=1000, currency="JPY")], [record("sbx_y", amount=1001, currency="JPY")]))
    dinar = only(classify([line("sbx_k", amount=1500, currency="KWD")], [record("sbx_k", amount=1500, currency="KWD")]))

    assert yen.detail == "provider 1000 JPY, execution 1001 JPY (difference -1 JPY)"
    assert dinar.match_class is MatchClass.MATCHED


def test_a_different_currency_is_currency_mismatch_and_amounts_are_not_compared() -> None:
    item = only(classify([line("sbx_a", currency="USD", amount=5)], [record("sbx_a", currency="EUR")]))

    assert (item.match_class, item.also) == (MatchClass.CURRENCY_MISMATCH, ())
    assert item.detail == "provider USD, execution EUR"


@pytest.mark.parametrize(
    ("settled", "ours", "shown"),
    [
        (P.PAID, S.FAILED, "failed"),
        (P.PAID, S.PENDING, "pending (awaiting settlement)"),
        (P.PAID, S.PROCESSING, "processing"),
        (P.FAILED, S.COMPLETED, "completed"),
        (P.FAILED, S.PENDING, "pending (awaiting settlement)"),
        (P.REFUNDED, S.COMPLETED, "completed"),
        (P.CHARGEBACK, S.FAILED, "failed"),
    ],
)
def test_provider_outcome_we_did_not_record_is_status_mismatch(
    settled: SettlementStatus, ours: ExecutionStatus, shown: str
) -> None:
    item = only(
        classify([line("sbx_a", status=settled)], [record("sbx_a", status=ours, finished_at=None)]),
    )

    assert item.match_class is MatchClass.STATUS_MISMATCH
    assert item.detail == f"provider says {settled}, execution is {shown}"


def test_several_differences_keep_the_first_as_class_and_the_others_in_also() -> None:
    item = only(classify([line("sbx_a", amount=1, status=P.FAILED)], [record("sbx_a", amount=2)]))

    assert (item.match_class, item.also) == (MatchClass.AMOUNT_MISMATCH, (MatchClass.STATUS_MISMATCH,))
    assert item.detail.endswith("; provider says failed, execution is completed")


@pytest.mark.parametrize(
    ("settled", "ours", "reversed", "agrees"),
    [
        (P.PAID, S.COMPLETED, False, True),
        # A later refund does not undo that the payment settled.
        (P.PAID, S.COMPLETED, True, True),
        (P.FAILED, S.FAILED, False, True),
        (P.REFUNDED, S.COMPLETED, True, True),
        (P.CHARGEBACK, S.COMPLETED, True, True),
        # Money went back and we do not know: we would count it as ours.
        (P.REFUNDED, S.COMPLETED, False, False),
        (P.CHARGEBACK, S.COMPLETED, False, False),
        (P.PAID, S.CANCELED, False, False),
        (P.PAID, S.CREATED, False, False),
        (P.FAILED, S.PROCESSING, False, False),
    ],
)
def test_status_agrees_with_what_each_provider_status_implies(
    settled: SettlementStatus, ours: ExecutionStatus, reversed: bool, agrees: bool
) -> None:
    assert status_agrees(settled, record(status=ours, reversed=reversed)) is agrees


def test_a_reference_we_do_not_know_is_missing_internally() -> None:
    item = only(classify([line("sbx_unknown")], [record("sbx_other", finished_at=NOON - timedelta(days=3))]))

    assert (item.match_class, item.record, item.provider_reference) == (
        MatchClass.MISSING_INTERNALLY,
        None,
        "sbx_unknown",
    )


def test_references_are_matched_within_their_provider_only() -> None:
    item = only(classify([line("ref_1", provider="adyen")], [record("ref_1", finished_at=None, status=S.PENDING)]))

    assert item.match_class is MatchClass.MISSING_INTERNALLY


def test_a_reference_two_executions_carry_is_ambiguous_and_matched_to_neither() -> None:
    item = only(classify([line("sbx_a")], [record("sbx_a", finished_at=None), record("sbx_a", finished_at=None)]))

    assert (item.match_class, item.record, item.detail) == (
        MatchClass.AMBIGUOUS_REFERENCE,
        None,
        "2 executions carry this reference",
    )


def test_an_execution_completed_in_the_period_and_listed_nowhere_is_missing_from_file() -> None:
    unlisted = record("sbx_gone", amount=1500, currency="KWD")

    items = classify([line("sbx_a")], [record("sbx_a"), unlisted])

    assert [i.match_class for i in items] == [MatchClass.MATCHED, MatchClass.MISSING_FROM_FILE]
    assert (items[1].line, items[1].record, items[1].provider_reference) == (None, unlisted, "sbx_gone")
    assert items[1].detail == "completed 1.500 KWD; no sandbox file listed it"


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
def test_executions_not_completed_in_the_period_are_never_missing_from_file(ours: InternalRecord) -> None:
    assert classify([], [ours]) == []


def test_an_item_listed_in_the_look_back_days_is_not_missing_from_file() -> None:
    # A debit the provider settled yesterday that we learned of after midnight.
    earlier = line("sbx_late", day=DAY - timedelta(days=1))

    assert classify([], [record("sbx_late")], earlier=[earlier]) == []


def test_the_same_reference_and_status_listed_twice_is_duplicate_in_file_pointing_at_the_first() -> None:
    ours = record("sbx_a")
    first, again = line("sbx_a", line_number=2), line("sbx_a", line_number=7)

    items = classify([first, again], [ours])

    assert [i.match_class for i in items] == [MatchClass.MATCHED, MatchClass.DUPLICATE_IN_FILE]
    assert (items[1].line, items[1].first_listed, items[1].record) == (again, first, ours)
    assert items[1].detail == "paid already listed in settlements/sandbox/2026-04-10.csv line 2"


def test_an_item_already_listed_in_the_look_back_days_is_a_duplicate() -> None:
    earlier = line("sbx_a", day=DAY - timedelta(days=1))

    item = only(classify([line("sbx_a")], [record("sbx_a")], earlier=[earlier]))

    assert (item.match_class, item.first_listed) == (MatchClass.DUPLICATE_IN_FILE, earlier)


def test_a_payment_and_its_refund_on_the_same_day_are_two_items_not_a_duplicate() -> None:
    ours = record("sbx_a", reversed=True)

    items = classify([line("sbx_a"), line("sbx_a", status=P.REFUNDED, line_number=3)], [ours])

    assert [i.match_class for i in items] == [MatchClass.MATCHED, MatchClass.MATCHED]


def test_a_chargeback_for_an_old_payment_matches_the_execution_loaded_by_reference() -> None:
    months_ago = record("sbx_old", reversed=True, finished_at=NOON - timedelta(days=90))

    item = only(classify([line("sbx_old", status=P.CHARGEBACK)], [months_ago]))

    assert item.match_class is MatchClass.MATCHED


def test_records_loaded_twice_count_once() -> None:
    ours = record("sbx_gone")

    items = classify([], [ours, ours])

    assert [i.match_class for i in items] == [MatchClass.MISSING_FROM_FILE]


def test_every_line_gets_exactly_one_class() -> None:
    lines = [
        line("sbx_ok"),
        line("sbx_amount", amount=1),
        line("sbx_unknown"),
        line("sbx_ok", line_number=5),
        line("sbx_status", status=P.FAILED),
    ]
    records = [record("sbx_ok"), record("sbx_amount"), record("sbx_status"), record("sbx_unlisted")]

    items = classify(lines, records)

    assert [i.line for i in items if i.line is not None] == lines
    assert [i.match_class for i in items] == [
        MatchClass.MATCHED,
        MatchClass.AMOUNT_MISMATCH,
        MatchClass.MISSING_INTERNALLY,
        MatchClass.DUPLICATE_IN_FILE,
        MatchClass.STATUS_MISMATCH,
        MatchClass.MISSING_FROM_FILE,
    ]


def test_a_partial_refund_line_matches_the_recorded_refund_of_its_amount() -> None:
    ours = record("sbx_a", reversed=True, refund_amounts=(500, 700), finished_at=NOON - timedelta(days=2))
    refunds = [line("sbx_a", amount=700, status=P.REFUNDED), line("sbx_a", amount=500, status=P.REFUNDED)]
    items = classify(refunds, [ours])
    assert [item.match_class for item in items] == [MatchClass.MATCHED, MatchClass.MATCHED]


def test_a_refund_line_of_an_amount_no_refund_has_is_an_amount_mismatch() -> None:
    ours = record("sbx_a", reversed=True, refund_amounts=(500,), finished_at=NOON - timedelta(days=2))
    item = only(classify([line("sbx_a", amount=600, status=P.REFUNDED)], [ours]))
    assert item.match_class is MatchClass.AMOUNT_MISMATCH
    assert item.detail == "provider refunded 6.00 EUR, recorded: 5.00 EUR"


def test_a_chargeback_line_is_matched_against_chargebacks_not_refunds() -> None:
    ours = record("sbx_a", reversed=True, refund_amounts=(1999,), chargeback_amounts=(), finished_at=NOON)
    item = only(classify([line("sbx_a", amount=1999, status=P.CHARGEBACK)], [ours]))
    # No chargeback amount is recorded: compared with the payment as before, and it agrees on the amount.
    assert item.match_class is MatchClass.MATCHED
    partial = record("sbx_b", reversed=True, chargeback_amounts=(900,), finished_at=NOON)
    assert only(classify([line("sbx_b", amount=1999, status=P.CHARGEBACK)], [partial])).match_class is (
        MatchClass.AMOUNT_MISMATCH
    )
