"""Report summaries and discrepancies for the HTML report's tests (unit and browser); tests state only what matters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

from billing.settlement.outcome import (
    CurrencyTotals,
    Discrepancy,
    DiscrepancyClass,
    FeeTotal,
    FileRead,
    PayoutCheck,
    ReportSummary,
)

REPORT_ID = UUID("7d1f7a52-2b1c-5c1e-9d3a-0c2f4b6a8e10")
START = date(2026, 4, 6)
END = date(2026, 4, 13)  # exclusive: the ISO week of 2026-04-06


def summary(**overrides: Any) -> ReportSummary:
    """A clean report (one file, one balanced payout, nothing found) unless overridden."""
    fields: dict[str, Any] = {
        "report_id": REPORT_ID,
        "provider": "adyen",
        "period_start": START,
        "period_end": END,
        "generated_at": datetime(2026, 4, 13, 6, 0, tzinfo=UTC),
        "files": (FileRead("settlement_detail_report_batch_118.csv", "ab" * 32, "adyen_sdr", 3, 0),),
        "file_errors": (),
        "line_errors": (),
        "line_error_count": 0,
        "missing_files": (),
        "totals": (CurrencyTotals("EUR", 2, 2000, 0, 0, 1940, 60, 2000),),
        "payouts": (PayoutCheck("118", "EUR", 1940, 1940, 2, "settlement_detail_report_batch_118.csv", 4),),
        "fees_by_type": (FeeTotal("EUR", "commission", 60),),
        "fees_by_payment_method": (FeeTotal("EUR", "visa", 60),),
        "counts": {},
    }
    fields.update(overrides)
    return ReportSummary(**fields)


def discrepancy(discrepancy_class: DiscrepancyClass, line_number: int | None = 2, **overrides: Any) -> Discrepancy:
    fields: dict[str, Any] = {
        "report_id": REPORT_ID,
        "discrepancy_class": discrepancy_class,
        "source": "settlement_detail_report_batch_118.csv",
        "line_number": line_number,
        "provider_reference": f"PSP{line_number or 0:013d}",
        "record_kind": "settled",
        "tenant_id": uuid4(),
        "execution_id": uuid4(),
        "expected_amount": 1999,
        "expected_currency": "EUR",
        "reported_amount": 2000,
        "reported_currency": "EUR",
        "detail": f"{discrepancy_class.value} at line {line_number}",
        "batch": "118",
        "payment_method": "visa",
    }
    fields.update(overrides)
    return Discrepancy(**fields)


def counts_of(discrepancies: list[Discrepancy]) -> dict[DiscrepancyClass, int]:
    counts: dict[DiscrepancyClass, int] = {}
    for d in discrepancies:
        counts[d.discrepancy_class] = counts.get(d.discrepancy_class, 0) + 1
    return counts


def realistic_findings() -> list[Discrepancy]:
    """Several classes over EUR, JPY and KWD, listed in file order (not severity order), as the engine may yield."""
    sdr = "settlement_detail_report_batch_118.csv"
    stripe = "itemized_balance_change_from_activity.csv"
    found = [
        discrepancy(DiscrepancyClass.UNMAPPED_TYPE, 9, record_kind="other", detail="type 'ReserveAdjustment'"),
        discrepancy(
            DiscrepancyClass.AMOUNT_MISMATCH,
            14,
            expected_amount=120000,
            expected_currency="JPY",
            reported_amount=119000,
            reported_currency="JPY",
            payment_method="jcb",
            detail="settled 119000 JPY, charged 120000 JPY",
        ),
        discrepancy(
            DiscrepancyClass.PAYOUT_MISMATCH,
            40,
            record_kind="payout",
            tenant_id=None,
            execution_id=None,
            provider_reference=None,
            expected_amount=1_234_567,
            expected_currency="KWD",
            reported_amount=1_234_000,
            reported_currency="KWD",
            batch="119",
            payment_method=None,
            detail="items add up to 1234.567 KWD, payout line says 1234.000 KWD",
        ),
        discrepancy(
            DiscrepancyClass.MISSING_FROM_FILE,
            source=None,
            line_number=None,
            provider_reference="PSP9000000000001",
            record_kind=None,
            reported_amount=None,
            reported_currency=None,
            batch=None,
            detail="completed 2026-04-08, in no file",
        ),
        discrepancy(
            DiscrepancyClass.FEE_OUT_OF_RANGE,
            21,
            source=stripe,
            expected_amount=45,
            reported_amount=310,
            payment_method="card",
            detail="fees 3.10 EUR, band 0.10-0.45 EUR",
        ),
        discrepancy(DiscrepancyClass.DUPLICATE_IN_FILE, 22, source=stripe, detail="listed again (first at line 12)"),
    ]
    found += [
        discrepancy(
            DiscrepancyClass.MISSING_INTERNALLY, 50 + n, source=sdr, expected_amount=None, expected_currency=None
        )
        for n in range(3)
    ]
    return found


def realistic_summary(findings: list[Discrepancy]) -> ReportSummary:
    """A week of Adyen and Stripe files in three currencies, one unbalanced payout and one with no payout line."""
    return summary(
        provider="adyen",
        supersedes=UUID("0b3a6c1e-9f2d-5e4a-8b7c-1d2e3f405162"),
        files=(
            FileRead("settlement_detail_report_batch_118.csv", "1f" * 32, "adyen_sdr", 4210, 2),
            FileRead("settlement_detail_report_batch_119.csv", "2e" * 32, "adyen_sdr", 3897, 0),
        ),
        file_errors=({"source": "settlement_detail_report_batch_120.csv", "reason": "missing required column 'Type'"},),
        line_errors=(
            {
                "source": "settlement_detail_report_batch_118.csv",
                "line": 77,
                "field": "Net Credit (NC)",
                "reason": "not a decimal amount",
                "shown": "12,5O",
            },
        ),
        line_error_count=2,
        missing_files=("settlement_detail_report_batch_121.csv",),
        totals=(
            CurrencyTotals("EUR", 4100, 8_245_050, 120_000, 4_999, 7_925_861, 194_190, 8_245_000),
            CurrencyTotals("JPY", 120, 3_450_000, 0, 0, 3_380_000, 70_000, 3_451_000),
            CurrencyTotals("KWD", 17, 1_250_125, 5_000, 0, 1_234_567, 10_558, 1_250_125),
        ),
        payouts=(
            PayoutCheck("118", "EUR", 7_925_861, 7_925_861, 4100, "settlement_detail_report_batch_118.csv", 4211),
            PayoutCheck("119", "KWD", 1_234_567, 1_234_000, 17, "settlement_detail_report_batch_119.csv", 3898),
            PayoutCheck("120", "JPY", 3_380_000, None, 120, None, None),
        ),
        fees_by_type=(
            FeeTotal("EUR", "commission", 120_000),
            FeeTotal("EUR", "interchange", 60_190),
            FeeTotal("EUR", "scheme_fees", 14_000),
            FeeTotal("JPY", "commission", 70_000),
            FeeTotal("KWD", "markup", 10_558),
        ),
        fees_by_payment_method=(
            FeeTotal("EUR", "visa", 150_000),
            FeeTotal("EUR", "ideal", 44_190),
            FeeTotal("JPY", "jcb", 70_000),
            FeeTotal("KWD", "mc", 10_558),
        ),
        counts=counts_of(findings),
    )


def one_shot(items: list[Discrepancy]) -> Iterator[Discrepancy]:
    """A generator: it can be consumed once only, as the engine's stream of findings."""
    yield from items
