"""What a reconciliation run concluded, as values every consumer shares: the engine builds them, the store persists
them, the CLI prints them, and the JSON, CSV and HTML renderings draw them.

One provider and one period per report. Amounts are integer minor units with their ISO 4217 currency, everywhere.
Ids are deterministic (uuid5): the same files give the same report id and the same discrepancy ids, so a re-run is
recognised as one, and a late file (other digests) gives a new report that supersedes the earlier one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Final
from uuid import UUID, uuid5

# Namespace of every settlement uuid5; fixed forever, or re-runs stop recognising earlier reports.
SETTLEMENT_NAMESPACE: Final = UUID("5e771e00-0000-5000-8000-000000000013")


class DiscrepancyClass(StrEnum):
    """What reconciliation concluded about one item, payout, fee or execution. Only MATCHED is not a discrepancy."""

    MATCHED = "matched"
    # A payout / batch whose items' net amounts do not add up to the payout line (or a payout line with no items).
    PAYOUT_MISMATCH = "payout_mismatch"
    # The provider settled something we have no execution for (or several: the reference cannot tell which).
    MISSING_INTERNALLY = "missing_internally"
    # We completed it in the period, but no settlement file listed it (in the period or the look-back days).
    MISSING_FROM_FILE = "missing_from_file"
    # A refund or chargeback line with no recorded reversal of that amount left to match (or over the payment).
    REVERSAL_MISSING = "reversal_missing"
    STATUS_MISMATCH = "status_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    # A reversal line whose payment has reversals, none of this amount (partial refunds are matched by amount).
    REVERSAL_AMOUNT_MISMATCH = "reversal_amount_mismatch"
    # The same item listed again: money counted twice, by the provider or in its file.
    DUPLICATE_IN_FILE = "duplicate_in_file"
    AMBIGUOUS_REFERENCE = "ambiguous_reference"
    # The fees of an item outside the tenant's expected band for its payment method.
    FEE_OUT_OF_RANGE = "fee_out_of_range"
    # A row of a type we do not map (RecordKind.OTHER): kept and reported, never dropped.
    UNMAPPED_TYPE = "unmapped_type"


# Report order: the most consequential first (a payout that does not balance is money missing from the bank).
CLASS_SEVERITY: Final[tuple[DiscrepancyClass, ...]] = (
    DiscrepancyClass.PAYOUT_MISMATCH,
    DiscrepancyClass.MISSING_INTERNALLY,
    DiscrepancyClass.MISSING_FROM_FILE,
    DiscrepancyClass.REVERSAL_MISSING,
    DiscrepancyClass.STATUS_MISMATCH,
    DiscrepancyClass.CURRENCY_MISMATCH,
    DiscrepancyClass.AMOUNT_MISMATCH,
    DiscrepancyClass.REVERSAL_AMOUNT_MISMATCH,
    DiscrepancyClass.DUPLICATE_IN_FILE,
    DiscrepancyClass.AMBIGUOUS_REFERENCE,
    DiscrepancyClass.FEE_OUT_OF_RANGE,
    DiscrepancyClass.UNMAPPED_TYPE,
    DiscrepancyClass.MATCHED,
)
DISCREPANCY_CLASSES: Final[tuple[DiscrepancyClass, ...]] = tuple(
    c for c in CLASS_SEVERITY if c is not DiscrepancyClass.MATCHED
)


def money_dict(amount: int | None, currency: str | None) -> dict[str, Any] | None:
    """The API's money shape, or None when a side has no figure (an item missing from one side)."""
    if amount is None or currency is None:
        return None
    return {"amount": amount, "currency": currency}


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One finding. `expected` is our side (execution, reversal, band, computed payout), `reported` the provider's."""

    report_id: UUID
    discrepancy_class: DiscrepancyClass
    # Where it was found: the file row (source, line) or, for missing_from_file, the execution.
    source: str | None
    line_number: int | None
    provider_reference: str | None
    record_kind: str | None  # RecordKind value of the row, or "payout" for a payout check
    tenant_id: UUID | None
    execution_id: UUID | None
    expected_amount: int | None
    expected_currency: str | None
    reported_amount: int | None
    reported_currency: str | None
    detail: str
    also: tuple[DiscrepancyClass, ...] = ()
    batch: str | None = None
    payment_method: str | None = None

    @property
    def id(self) -> UUID:
        """Stable across re-runs of the same files: the report, the class and where it was found."""
        where = f"{self.source}:{self.line_number}" if self.source is not None else f"execution:{self.execution_id}"
        return uuid5(SETTLEMENT_NAMESPACE, f"{self.report_id}|{self.discrepancy_class.value}|{where}|{self.batch}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "class": self.discrepancy_class.value,
            "also": [c.value for c in self.also],
            "source": self.source,
            "line": self.line_number,
            "provider_reference": self.provider_reference,
            "record_kind": self.record_kind,
            "batch": self.batch,
            "payment_method": self.payment_method,
            "tenant_id": None if self.tenant_id is None else str(self.tenant_id),
            "execution_id": None if self.execution_id is None else str(self.execution_id),
            "expected": money_dict(self.expected_amount, self.expected_currency),
            "reported": money_dict(self.reported_amount, self.reported_currency),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class FileRead:
    """One settlement file as read: its digest makes the report id, its counts say how much of it was usable."""

    source: str
    sha256: str
    format: str  # "adyen_sdr" / "stripe_itemized" / "sandbox_csv"
    records: int
    line_errors: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "format": self.format,
            "records": self.records,
            "line_errors": self.line_errors,
        }


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """Per gross currency: what the file moved, by kind, and what we expected from our executions."""

    currency: str
    items: int
    settled: int
    refunded: int
    chargebacks: int
    net: int  # in this currency when it is also the net currency of the rows; see PayoutCheck for batch figures
    fees: int
    expected_settled: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "items": self.items,
            "settled": self.settled,
            "refunded": self.refunded,
            "chargebacks": self.chargebacks,
            "net": self.net,
            "fees": self.fees,
            "expected_settled": self.expected_settled,
        }


@dataclass(frozen=True, slots=True)
class PayoutCheck:
    """One batch / payout: the sum of its items' net amounts against the payout line the provider wrote."""

    batch: str
    currency: str
    computed_net: int
    reported: int | None  # None: the batch has items but no payout line in the files read
    items: int
    source: str | None
    line_number: int | None

    @property
    def difference(self) -> int | None:
        return None if self.reported is None else self.reported - self.computed_net

    @property
    def balances(self) -> bool | None:
        """None when the files hold no payout line for the batch: not paid out in them (Adyen carries a batch below
        its payout threshold forward; Stripe's itemized report may list a payout's items without the payout row),
        so there is nothing to check it against yet. A payout line without items is checked, against zero."""
        return None if self.reported is None else self.reported == self.computed_net

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "currency": self.currency,
            "computed_net": self.computed_net,
            "reported": self.reported,
            "difference": self.difference,
            "balances": self.balances,
            "items": self.items,
            "source": self.source,
            "line": self.line_number,
        }


@dataclass(frozen=True, slots=True)
class FeeTotal:
    """Fees of one type (commission, markup, scheme_fees, interchange, fee) or one payment method, per currency."""

    currency: str
    key: str
    amount: int

    def as_dict(self, key_name: str) -> dict[str, Any]:
        return {"currency": self.currency, key_name: self.key, "amount": self.amount}


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """Everything a report says except the discrepancy list itself (which is streamed, never held whole)."""

    report_id: UUID
    provider: str
    period_start: date
    period_end: date  # exclusive
    generated_at: datetime
    files: tuple[FileRead, ...]
    file_errors: tuple[Mapping[str, Any], ...]  # FileError.as_dict()
    line_errors: tuple[Mapping[str, Any], ...]  # LineError.as_dict(), the first MAX_LINE_ERRORS_SHOWN
    line_error_count: int
    missing_files: tuple[str, ...]
    totals: tuple[CurrencyTotals, ...]
    payouts: tuple[PayoutCheck, ...]
    fees_by_type: tuple[FeeTotal, ...]
    fees_by_payment_method: tuple[FeeTotal, ...]
    counts: Mapping[DiscrepancyClass, int]
    supersedes: UUID | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def payouts_balance(self) -> bool:
        """No payout line in the files disagrees with its items (batches not paid out yet do not count)."""
        return all(p.balances is not False for p in self.payouts)

    @property
    def discrepancy_count(self) -> int:
        return sum(n for c, n in self.counts.items() if c is not DiscrepancyClass.MATCHED)

    def as_dict(self) -> dict[str, Any]:
        return {
            "report_id": str(self.report_id),
            "provider": self.provider,
            "period": {"start": self.period_start.isoformat(), "end": self.period_end.isoformat()},
            "generated_at": self.generated_at.isoformat(),
            "supersedes": None if self.supersedes is None else str(self.supersedes),
            "files": [f.as_dict() for f in self.files],
            "file_errors": [dict(e) for e in self.file_errors],
            "line_errors": [dict(e) for e in self.line_errors],
            "line_error_count": self.line_error_count,
            "missing_files": list(self.missing_files),
            "totals": [t.as_dict() for t in self.totals],
            "payouts": [p.as_dict() for p in self.payouts],
            "payouts_balance": self.payouts_balance,
            "fees": {
                "by_type": [f.as_dict("type") for f in self.fees_by_type],
                "by_payment_method": [f.as_dict("payment_method") for f in self.fees_by_payment_method],
            },
            "counts": {c.value: self.counts.get(c, 0) for c in CLASS_SEVERITY},
            "discrepancy_count": self.discrepancy_count,
            "notes": list(self.notes),
        }


def report_id_for(provider: str, period_start: date, period_end: date, files: Iterable[FileRead]) -> UUID:
    """The same provider, period and file contents always name the same report; any other file set, another."""
    digest = hashlib.sha256()
    for read in sorted(files, key=lambda f: f.source):
        digest.update(f"{read.source}\0{read.sha256}\n".encode())
    return uuid5(SETTLEMENT_NAMESPACE, f"{provider}|{period_start}|{period_end}|{digest.hexdigest()}")


def worst_first(discrepancies: Sequence[Discrepancy]) -> list[Discrepancy]:
    order = {c: i for i, c in enumerate(CLASS_SEVERITY)}
    return sorted(discrepancies, key=lambda d: (order[d.discrepancy_class], d.source or "", d.line_number or 0))
