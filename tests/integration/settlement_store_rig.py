"""Reports and discrepancies as the reconciliation engine hands them to the store, built from the shared contract
(billing.settlement.outcome), and connections as the two roles that touch them: billing_worker saves, billing_finance
reads and resolves. Shared by the store's and the settlement API's tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection, connect
from billing.db.roles import DatabaseRole, login_url
from billing.settlement.outcome import (
    CurrencyTotals,
    Discrepancy,
    DiscrepancyClass,
    FileRead,
    PayoutCheck,
    ReportSummary,
    report_id_for,
)

DAY = date(2026, 4, 10)


@pytest.fixture
def worker(private_admin_url: str) -> Iterator[Connection]:
    """billing_worker on the test's own database: the settlement_report function's role, which saves reports."""
    with connect(login_url(private_admin_url, DatabaseRole.WORKER)) as connection:
        yield connection


@pytest.fixture
def finance(private_admin_url: str) -> Iterator[Connection]:
    """billing_finance on the test's own database: the settlement API's role, which reads and resolves."""
    with connect(login_url(private_admin_url, DatabaseRole.FINANCE)) as connection:
        yield connection


def file_read(provider: str, day: date, *, digest: str | None = None, records: int = 3) -> FileRead:
    return FileRead(
        source=f"settlements/{provider}/{day.isoformat()}.csv",
        sha256=digest or uuid4().hex * 2,
        format="adyen_sdr" if provider == "adyen" else "stripe_itemized",
        records=records,
        line_errors=0,
    )


def summary_of(
    provider: str = "adyen",
    start: date = DAY,
    end: date | None = None,
    *,
    files: tuple[FileRead, ...] | None = None,
    counts: Mapping[DiscrepancyClass, int] | None = None,
    balances: bool = True,
    **overrides: Any,
) -> ReportSummary:
    """A report as the engine builds it: its id from the provider, the period and the files' digests."""
    end = end or start + timedelta(days=1)
    files = files if files is not None else (file_read(provider, start),)
    payout = PayoutCheck("batch-1", "EUR", 3000, 3000 if balances else 2900, 2, files[0].source, 9)
    summary = ReportSummary(
        report_id=report_id_for(provider, start, end, files),
        provider=provider,
        period_start=start,
        period_end=end,
        generated_at=datetime(2026, 4, 11, 2, 0, tzinfo=UTC),
        files=files,
        file_errors=(),
        line_errors=(),
        line_error_count=0,
        missing_files=(),
        totals=(CurrencyTotals("EUR", 2, 3100, 0, 0, 3000, 100, 3100),),
        payouts=(payout,),
        fees_by_type=(),
        fees_by_payment_method=(),
        counts=counts or {DiscrepancyClass.MATCHED: 1, DiscrepancyClass.AMOUNT_MISMATCH: 1},
    )
    return replace(summary, **overrides)


def discrepancy_of(
    report: ReportSummary | UUID,
    line: int,
    discrepancy_class: DiscrepancyClass = DiscrepancyClass.AMOUNT_MISMATCH,
    *,
    tenant_id: UUID | None = None,
    **overrides: Any,
) -> Discrepancy:
    """A discrepancy found on `line` of the report's first file."""
    report_id = report if isinstance(report, UUID) else report.report_id
    source = report.files[0].source if isinstance(report, ReportSummary) else "settlements/adyen/2026-04-10.csv"
    fields: dict[str, Any] = {
        "report_id": report_id,
        "discrepancy_class": discrepancy_class,
        "source": source,
        "line_number": line,
        "provider_reference": f"PSP{line:013d}",
        "record_kind": "settled",
        "tenant_id": tenant_id,
        "execution_id": uuid4() if tenant_id else None,
        "expected_amount": 1999,
        "expected_currency": "EUR",
        "reported_amount": 1899,
        "reported_currency": "EUR",
        "detail": "the provider settled 18.99 EUR, the execution is 19.99 EUR",
        "batch": "batch-1",
        "payment_method": "visa",
    }
    fields.update(overrides)
    return Discrepancy(**fields)
