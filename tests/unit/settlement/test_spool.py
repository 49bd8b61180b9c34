"""Findings spooled on disk between the pass and the writes: worst class first, in found order, read many times."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from billing.settlement.outcome import CLASS_SEVERITY, DiscrepancyClass
from billing.settlement.reconciliation.findings import Finding
from billing.settlement.reconciliation.spool import FindingSpool

C = DiscrepancyClass


def finding(klass: DiscrepancyClass, line: int, **overrides: object) -> Finding:
    fields: dict[str, object] = {
        "discrepancy_class": klass,
        "source": "settlements/adyen/2026-04-10.csv",
        "line_number": line,
        "provider_reference": f"ref{line}",
        "record_kind": "settled",
        "tenant_id": uuid4(),
        "execution_id": uuid4(),
        "expected_amount": 1999,
        "expected_currency": "EUR",
        "reported_amount": 2000,
        "reported_currency": "EUR",
        "detail": "provider 20.00 EUR, execution 19.99 EUR (difference 0.01 EUR)",
        "also": (C.STATUS_MISMATCH,),
        "batch": "42",
        "payment_method": "visa",
    }
    fields.update(overrides)
    return Finding(**fields)  # type: ignore[arg-type]


def test_findings_come_back_worst_class_first_in_the_order_found_and_unchanged(tmp_path: Path) -> None:
    added = [finding(C.UNMAPPED_TYPE, 2), finding(C.AMOUNT_MISMATCH, 3), finding(C.PAYOUT_MISMATCH, 4, tenant_id=None)]
    added += [finding(C.AMOUNT_MISMATCH, n) for n in range(5, 3000)]

    with FindingSpool(str(tmp_path)) as spool:
        for item in added:
            spool.add(item)
        first, second = list(spool.findings()), list(spool.findings())

    order = {c: i for i, c in enumerate(CLASS_SEVERITY)}
    assert first == second == sorted(added, key=lambda f: order[f.discrepancy_class])
    assert list(tmp_path.iterdir()) == []  # closed: the spool removed itself


def test_counts_and_amounts_per_class_and_currency(tmp_path: Path) -> None:
    with FindingSpool(str(tmp_path)) as spool:
        spool.add(finding(C.AMOUNT_MISMATCH, 2))
        spool.add(finding(C.AMOUNT_MISMATCH, 3, reported_amount=5, reported_currency="JPY"))
        spool.add(finding(C.MISSING_FROM_FILE, 4, reported_amount=None, reported_currency=None))

        assert spool.counts == {C.AMOUNT_MISMATCH: 2, C.MISSING_FROM_FILE: 1}
        assert spool.amounts == {C.AMOUNT_MISMATCH: {"EUR": 2000, "JPY": 5}, C.MISSING_FROM_FILE: {"EUR": 1999}}


def test_discrepancies_carry_the_report_id_they_are_read_with(tmp_path: Path) -> None:
    report_id = uuid4()
    with FindingSpool(str(tmp_path)) as spool:
        spool.add(finding(C.AMOUNT_MISMATCH, 2))
        (discrepancy,) = spool.discrepancies(report_id)

    assert (discrepancy.report_id, discrepancy.line_number, discrepancy.also) == (report_id, 2, (C.STATUS_MISMATCH,))


def test_a_sealed_spool_takes_no_more_and_matched_is_never_spooled(tmp_path: Path) -> None:
    with FindingSpool(str(tmp_path)) as spool:
        with pytest.raises(ValueError, match="counted, not spooled"):
            spool.add(finding(C.MATCHED, 2))
        spool.seal()
        with pytest.raises(RuntimeError, match="sealed"):
            spool.add(finding(C.AMOUNT_MISMATCH, 2))
