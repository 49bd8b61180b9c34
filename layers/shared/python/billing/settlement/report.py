"""The settlement reconciliation report: what was read, how every item was classified, and the money on both sides.

Rendered twice under `reports/<period>/<start>_<end>.{json,csv}` (end exclusive): the JSON holds everything (files,
file errors, counts per class, totals per currency, discrepancies); the CSV is the discrepancy list alone, one row
per item, for whoever works through it in a spreadsheet. Amounts are integers of minor units in both; the JSON adds
a display form ("1.500 KWD", "1000 JPY") that is for reading only.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, assert_never

from billing.domain.money import Money, currency_exponent
from billing.domain.status import ExecutionStatus
from billing.settlement.files import FileError, ParsedFile, SettlementStatus
from billing.settlement.matching import CLASS_ORDER, Classified, InternalRecord, MatchClass
from billing.settlement.period import SettlementPeriod

REPORTS_PREFIX: Final = "reports/"
REPORT_FORMAT_VERSION: Final = 1
CSV_COLUMNS: Final = (
    "class",
    "also",
    "provider",
    "provider_reference",
    "file_key",
    "file_line",
    "provider_status",
    "provider_amount",
    "provider_currency",
    "provider_fee",
    "settled_at",
    "tenant_id",
    "execution_id",
    "execution_status",
    "execution_amount",
    "execution_currency",
    "execution_reversed",
    "execution_finished_at",
    "detail",
)


@dataclass(frozen=True, slots=True)
class ReportKeys:
    """Where a period's report is written; the same period always gets the same keys, so a re-run overwrites."""

    json: str
    csv: str

    @classmethod
    def for_period(cls, period: SettlementPeriod) -> ReportKeys:
        stem = f"{REPORTS_PREFIX}{period.kind.value}/{period.start.isoformat()}_{period.end.isoformat()}"
        return cls(json=f"{stem}.json", csv=f"{stem}.csv")


@dataclass(frozen=True, slots=True)
class FileSummary:
    key: str
    provider: str
    day: str
    lines: int
    errors: int


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """Sums in minor units of one currency: the provider's files and our executions finished in the period."""

    currency: str
    provider_paid: int = 0
    provider_failed: int = 0
    provider_refunded: int = 0
    provider_chargeback: int = 0
    provider_fees: int = 0
    internal_completed: int = 0
    internal_failed: int = 0
    # Lines classified matched: the part of the provider's figures that agrees with ours item by item.
    matched: int = 0

    @property
    def provider_net(self) -> int:
        """What the provider pays out for the period: settled payments less money returned and its fees."""
        return self.provider_paid - self.provider_refunded - self.provider_chargeback - self.provider_fees

    @property
    def paid_difference(self) -> int:
        """Provider-paid minus our completed: zero when both sides agree in aggregate."""
        return self.provider_paid - self.internal_completed

    def as_dict(self) -> dict[str, Any]:
        def money(amount: int) -> dict[str, Any]:
            return {"amount": amount, "display": Money(amount, self.currency).format()}

        return {
            "currency": self.currency,
            "exponent": currency_exponent(self.currency),
            "provider": {
                "paid": money(self.provider_paid),
                "failed": money(self.provider_failed),
                "refunded": money(self.provider_refunded),
                "chargeback": money(self.provider_chargeback),
                "fees": money(self.provider_fees),
                "net": money(self.provider_net),
            },
            "internal": {"completed": money(self.internal_completed), "failed": money(self.internal_failed)},
            "matched": money(self.matched),
            "paid_difference": money(self.paid_difference),
        }


@dataclass(frozen=True, slots=True)
class SettlementReport:
    """One period's reconciliation."""

    period: SettlementPeriod
    generated_at: datetime
    files: tuple[FileSummary, ...]
    missing_files: tuple[str, ...]
    file_errors: tuple[FileError, ...]
    items: tuple[Classified, ...]
    totals: tuple[CurrencyTotals, ...]
    counts: dict[MatchClass, int] = field(default_factory=dict)

    @property
    def discrepancies(self) -> list[Classified]:
        return [item for item in self.items if item.is_discrepancy]

    @property
    def complete(self) -> bool:
        """Every expected file was there and every row of it was read."""
        return not self.missing_files and not self.file_errors

    @property
    def period_closed(self) -> bool:
        """False for a report on a period still running (e.g. today): more items may settle."""
        return self.period.end_at <= self.generated_at

    def totals_for(self, currency: str) -> CurrencyTotals:
        for totals in self.totals:
            if totals.currency == currency:
                return totals
        return CurrencyTotals(currency)

    def summary(self) -> dict[str, Any]:
        return {
            **self.period.as_dict(),
            "complete": self.complete,
            "period_closed": self.period_closed,
            "files": len(self.files),
            "missing_files": len(self.missing_files),
            "file_errors": len(self.file_errors),
            "discrepancies": len(self.discrepancies),
            "counts": {c.value: self.counts.get(c, 0) for c in CLASS_ORDER},
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "report": "settlement_reconciliation",
            "format_version": REPORT_FORMAT_VERSION,
            "period": self.period.as_dict(),
            "generated_at": _iso(self.generated_at),
            "period_closed": self.period_closed,
            "complete": self.complete,
            "files": [
                {"key": f.key, "provider": f.provider, "day": f.day, "lines": f.lines, "errors": f.errors}
                for f in self.files
            ],
            "missing_files": list(self.missing_files),
            "file_errors": [error.as_dict() for error in self.file_errors],
            "counts": {c.value: self.counts.get(c, 0) for c in CLASS_ORDER},
            "totals": [totals.as_dict() for totals in self.totals],
            "discrepancies": [_discrepancy_dict(item) for item in self.discrepancies],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False).encode() + b"\n"

    def to_csv(self) -> bytes:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for item in self.discrepancies:
            writer.writerow(_csv_row(item))
        return buffer.getvalue().encode()


def build_report(
    period: SettlementPeriod,
    *,
    files: Sequence[ParsedFile],
    missing_files: Iterable[str],
    records: Iterable[InternalRecord],
    items: Iterable[Classified],
    generated_at: datetime,
    extra_errors: Iterable[FileError] = (),
) -> SettlementReport:
    """Assemble the report: order the items, count them per class and total both sides per currency."""
    ordered = sorted(items, key=_item_order)
    counts = Counter(item.match_class for item in ordered)
    # currency -> CurrencyTotals field -> minor units; sums of ints, so exact whatever the currency's exponent.
    sums: dict[str, Counter[str]] = {}

    def add(currency: str, total: str, amount: int) -> None:
        sums.setdefault(currency, Counter())[total] += amount

    for parsed in files:
        for line in parsed.lines:
            add(line.currency, _provider_total(line.status), line.amount)
            add(line.currency, "provider_fees", line.fee or 0)
    for item in ordered:
        if item.match_class is MatchClass.MATCHED and item.line is not None:
            add(item.line.currency, "matched", item.line.amount)
    unique = {(r.tenant_id, r.execution_id): r for r in records}
    for record in unique.values():
        if period.contains(record.finished_at):
            total = _internal_total(record.status)
            if total is not None:
                add(record.currency, total, record.amount)
    totals = {currency: CurrencyTotals(currency, **dict(values)) for currency, values in sums.items()}

    return SettlementReport(
        period=period,
        generated_at=generated_at,
        files=tuple(
            FileSummary(f.source, f.provider, f.day.isoformat(), len(f.lines), len(f.errors))
            for f in sorted(files, key=lambda f: (f.provider, f.day))
        ),
        missing_files=tuple(sorted(missing_files)),
        file_errors=(*extra_errors, *(error for f in files for error in f.errors)),
        items=tuple(ordered),
        totals=tuple(totals[c] for c in sorted(totals)),
        counts={c: counts.get(c, 0) for c in CLASS_ORDER},
    )


def _provider_total(status: SettlementStatus) -> str:
    """Which of the provider's totals a settled item counts towards."""
    match status:
        case SettlementStatus.PAID:
            return "provider_paid"
        case SettlementStatus.FAILED:
            return "provider_failed"
        case SettlementStatus.REFUNDED:
            return "provider_refunded"
        case SettlementStatus.CHARGEBACK:
            return "provider_chargeback"
        case _:
            assert_never(status)


def _internal_total(status: ExecutionStatus) -> str | None:
    """Which of our totals an execution finished in the period counts towards (only final outcomes do)."""
    match status:
        case ExecutionStatus.COMPLETED:
            return "internal_completed"
        case ExecutionStatus.FAILED:
            return "internal_failed"
        case ExecutionStatus.CANCELED | ExecutionStatus.CREATED | ExecutionStatus.PENDING | ExecutionStatus.PROCESSING:
            # Canceled never reached the provider's books; the others are not finished.
            return None
        case _:
            assert_never(status)


def _item_order(item: Classified) -> tuple[int, str, str, str, int]:
    line = item.line
    return (
        CLASS_ORDER.index(item.match_class),
        item.provider,
        item.provider_reference,
        line.source if line is not None else "",
        line.line_number if line is not None else 0,
    )


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _discrepancy_dict(item: Classified) -> dict[str, Any]:
    line, record, first = item.line, item.record, item.first_listed
    return {
        "class": item.match_class.value,
        "also": [c.value for c in item.also],
        "provider": item.provider,
        "provider_reference": item.provider_reference,
        "detail": item.detail,
        "file": {"key": line.source, "line": line.line_number} if line is not None else None,
        "first_listed": {"key": first.source, "line": first.line_number} if first is not None else None,
        "provider_item": (
            {
                "status": line.status.value,
                "amount": line.amount,
                "currency": line.currency,
                "fee": line.fee,
                "settled_at": _iso(line.settled_at),
            }
            if line is not None
            else None
        ),
        "execution": (
            {
                "tenant_id": str(record.tenant_id),
                "execution_id": str(record.execution_id),
                "status": record.status.value,
                "amount": record.amount,
                "currency": record.currency,
                "reversed": record.reversed,
                "finished_at": _iso(record.finished_at),
            }
            if record is not None
            else None
        ),
    }


def _csv_row(item: Classified) -> tuple[str | int, ...]:
    line, record = item.line, item.record
    return (
        item.match_class.value,
        " ".join(c.value for c in item.also),
        item.provider,
        item.provider_reference,
        line.source if line else "",
        line.line_number if line else "",
        line.status.value if line else "",
        line.amount if line else "",
        line.currency if line else "",
        "" if line is None or line.fee is None else line.fee,
        (_iso(line.settled_at) or "") if line else "",
        str(record.tenant_id) if record else "",
        str(record.execution_id) if record else "",
        record.status.value if record else "",
        record.amount if record else "",
        record.currency if record else "",
        ("true" if record.reversed else "false") if record else "",
        (_iso(record.finished_at) or "") if record else "",
        item.detail,
    )
