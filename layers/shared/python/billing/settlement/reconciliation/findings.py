"""A discrepancy before its report has an id: the report id hashes every file read, known only after the last one.

The engine classifies items while it streams the files, so what it finds is kept as a Finding (a Discrepancy
without report_id) and becomes a Discrepancy when the report id exists. as_row / from_row are the flat form the
spool stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from billing.domain.execution import PAN_MIN_DIGITS, mask_card_numbers
from billing.settlement.outcome import Discrepancy, DiscrepancyClass

Row = tuple[Any, ...]
CARD_MASK: Final = "[card number]"


def masked(text: str | None) -> str | None:
    """`text` with anything that looks like a card number masked. A file's names, batches and the cells its errors
    quote are the provider's text, and the database refuses a report holding a card number (BE013): one
    Luhn-valid 16-digit cell must not fail a whole run. Most values are too short to hold one and cost nothing."""
    if text is None or len(text) < PAN_MIN_DIGITS:
        return text
    return mask_card_numbers(text, CARD_MASK)


def masked_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """A line or file error's dict with its text values masked."""
    return {key: masked(value) if isinstance(value, str) else value for key, value in item.items()}


@dataclass(frozen=True, slots=True)
class Finding:
    discrepancy_class: DiscrepancyClass
    source: str | None
    line_number: int | None
    provider_reference: str | None
    record_kind: str | None
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

    def discrepancy(self, report_id: UUID) -> Discrepancy:
        return Discrepancy(
            report_id=report_id,
            discrepancy_class=self.discrepancy_class,
            source=masked(self.source),
            line_number=self.line_number,
            provider_reference=self.provider_reference,
            record_kind=self.record_kind,
            tenant_id=self.tenant_id,
            execution_id=self.execution_id,
            expected_amount=self.expected_amount,
            expected_currency=self.expected_currency,
            reported_amount=self.reported_amount,
            reported_currency=self.reported_currency,
            detail=self.detail,
            also=self.also,
            batch=masked(self.batch),
            payment_method=masked(self.payment_method),
        )

    def as_row(self) -> Row:
        """Primitives only (str, int, None, tuples of str), in field order."""
        return (
            self.discrepancy_class.value,
            self.source,
            self.line_number,
            self.provider_reference,
            self.record_kind,
            None if self.tenant_id is None else self.tenant_id.bytes,
            None if self.execution_id is None else self.execution_id.bytes,
            self.expected_amount,
            self.expected_currency,
            self.reported_amount,
            self.reported_currency,
            self.detail,
            tuple(c.value for c in self.also),
            self.batch,
            self.payment_method,
        )

    @classmethod
    def from_row(cls, row: Row) -> Finding:
        (
            klass,
            source,
            line_number,
            reference,
            kind,
            tenant,
            execution,
            expected_amount,
            expected_currency,
            reported_amount,
            reported_currency,
            detail,
            also,
            batch,
            payment_method,
        ) = row
        return cls(
            discrepancy_class=DiscrepancyClass(klass),
            source=source,
            line_number=line_number,
            provider_reference=reference,
            record_kind=kind,
            tenant_id=None if tenant is None else UUID(bytes=tenant),
            execution_id=None if execution is None else UUID(bytes=execution),
            expected_amount=expected_amount,
            expected_currency=expected_currency,
            reported_amount=reported_amount,
            reported_currency=reported_currency,
            detail=detail,
            also=tuple(DiscrepancyClass(c) for c in also),
            batch=batch,
            payment_method=payment_method,
        )
