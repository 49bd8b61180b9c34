"""Matching settlement lines to executions by (provider, provider_reference), and classifying every difference.

Pure: the service loads the lines and the executions, this module decides. Every line of the period's files gets
exactly one class, and every execution we completed in the period that no file listed gets `missing_from_file`,
so the counts add up to "lines + unlisted executions" and nothing falls between two classes.

When a line differs from its execution in several ways, its class is the first of currency, amount, status (a
different currency makes the amounts incomparable; money before status because it is what finance books), and the
others are kept in `also`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import assert_never
from uuid import UUID

from billing.domain.execution import Execution
from billing.domain.money import Money
from billing.domain.status import ExecutionStatus
from billing.settlement.files import SettlementLine, SettlementStatus
from billing.settlement.period import SettlementPeriod


class MatchClass(StrEnum):
    """What reconciliation concluded about one settled item or one execution. Only MATCHED is not a discrepancy."""

    MATCHED = "matched"
    # Same reference, different money or outcome.
    CURRENCY_MISMATCH = "currency_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    # The provider settled something we have no execution for (or several: the reference cannot tell which).
    MISSING_INTERNALLY = "missing_internally"
    AMBIGUOUS_REFERENCE = "ambiguous_reference"
    # We completed it in the period, but no settlement file listed it (in the period or the look-back days).
    MISSING_FROM_FILE = "missing_from_file"
    # The same reference with the same status listed again: money counted twice, by the provider or in its file.
    DUPLICATE_IN_FILE = "duplicate_in_file"


# Report order: the most consequential first.
CLASS_ORDER: tuple[MatchClass, ...] = (
    MatchClass.MISSING_INTERNALLY,
    MatchClass.MISSING_FROM_FILE,
    MatchClass.STATUS_MISMATCH,
    MatchClass.CURRENCY_MISMATCH,
    MatchClass.AMOUNT_MISMATCH,
    MatchClass.DUPLICATE_IN_FILE,
    MatchClass.AMBIGUOUS_REFERENCE,
    MatchClass.MATCHED,
)


@dataclass(frozen=True, slots=True)
class InternalRecord:
    """What we recorded about a charge we submitted to a provider: an execution with its provider reference."""

    tenant_id: UUID
    execution_id: UUID
    provider: str
    provider_reference: str
    amount: int
    currency: str
    status: ExecutionStatus
    submitted_at: datetime | None
    finished_at: datetime | None
    # A refund or chargeback is recorded beside the (unchanged, completed) execution: billing.execution_reversals.
    reversed: bool = False
    # The amounts of its refunds and of its chargebacks that have not failed (minor units of `currency`): a refund or
    # chargeback line matches one of them. Reversals recorded before amounts existed have none.
    refund_amounts: tuple[int, ...] = ()
    chargeback_amounts: tuple[int, ...] = ()

    @classmethod
    def from_execution(
        cls,
        execution: Execution,
        *,
        reversed: bool,
        refund_amounts: tuple[int, ...] = (),
        chargeback_amounts: tuple[int, ...] = (),
    ) -> InternalRecord:
        if execution.provider_reference is None:
            raise ValueError(f"execution {execution.id} has no provider reference to match")
        return cls(
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            provider=execution.payment_provider,
            provider_reference=execution.provider_reference,
            amount=execution.amount,
            currency=execution.currency,
            status=execution.status,
            submitted_at=execution.submitted_at,
            finished_at=execution.finished_at,
            reversed=reversed,
            refund_amounts=refund_amounts,
            chargeback_amounts=chargeback_amounts,
        )

    def reversal_amounts(self, settled: SettlementStatus) -> tuple[int, ...]:
        """The recorded amounts a line of this status is matched against (none for payments)."""
        match settled:
            case SettlementStatus.REFUNDED:
                return self.refund_amounts
            case SettlementStatus.CHARGEBACK:
                return self.chargeback_amounts
            case SettlementStatus.PAID | SettlementStatus.FAILED:
                return ()
            case _:
                assert_never(settled)

    @property
    def key(self) -> tuple[str, str]:
        return self.provider, self.provider_reference

    def describe(self) -> str:
        state = str(self.status)
        if self.status is ExecutionStatus.PENDING and self.submitted_at is not None:
            state = "pending (awaiting settlement)"
        if self.reversed:
            state += " with a reversal recorded"
        return state


@dataclass(frozen=True, slots=True)
class Classified:
    """The class of one settlement line (with its execution, when one was found) or of one unlisted execution."""

    match_class: MatchClass
    line: SettlementLine | None
    record: InternalRecord | None
    also: tuple[MatchClass, ...] = ()
    detail: str = ""
    # duplicate_in_file: where the item was listed first.
    first_listed: SettlementLine | None = None

    @property
    def is_discrepancy(self) -> bool:
        return self.match_class is not MatchClass.MATCHED

    @property
    def provider(self) -> str:
        return self._subject[0]

    @property
    def provider_reference(self) -> str:
        return self._subject[1]

    @property
    def _subject(self) -> tuple[str, str]:
        if self.line is not None:
            return self.line.provider, self.line.provider_reference
        if self.record is not None:
            return self.record.key
        raise ValueError("a classified item has a line, an execution or both")


def status_agrees(settled: SettlementStatus, record: InternalRecord) -> bool:
    """True if our execution is in the state the provider's status implies."""
    match settled:
        case SettlementStatus.PAID:
            # A later refund or chargeback does not undo that the payment settled.
            return record.status is ExecutionStatus.COMPLETED
        case SettlementStatus.FAILED:
            return record.status is ExecutionStatus.FAILED
        case SettlementStatus.REFUNDED | SettlementStatus.CHARGEBACK:
            # Money went back: we must know, or we count it as ours.
            return record.status is ExecutionStatus.COMPLETED and record.reversed
        case _:
            assert_never(settled)


def match_settlement(
    lines: Sequence[SettlementLine],
    records: Iterable[InternalRecord],
    *,
    period: SettlementPeriod,
    earlier_lines: Sequence[SettlementLine] = (),
) -> list[Classified]:
    """Classify the period's `lines` against `records`, then flag the period's completed executions not listed.

    `records` holds the executions submitted or finished in the period and those the lines reference (a chargeback
    may arrive months after its payment). `earlier_lines` come from the look-back days before the period: they are
    not classified again (an earlier report did), but an item they list is not missing from the files, and listing
    it again is a duplicate.
    """
    unique = {(r.tenant_id, r.execution_id): r for r in records}
    by_reference: dict[tuple[str, str], list[InternalRecord]] = {}
    for record in unique.values():
        by_reference.setdefault(record.key, []).append(record)

    first_listings: dict[tuple[str, str, SettlementStatus, int | None], SettlementLine] = {}
    for line in earlier_lines:
        first_listings.setdefault(_listing(line), line)
    listed = {(line.provider, line.provider_reference) for line in (*earlier_lines, *lines)}

    results: list[Classified] = []
    for line in lines:
        candidates = by_reference.get((line.provider, line.provider_reference), [])
        first = first_listings.setdefault(_listing(line), line)
        if first is not line:
            where = f"{first.source} line {first.line_number}"
            results.append(
                Classified(
                    MatchClass.DUPLICATE_IN_FILE,
                    line,
                    candidates[0] if len(candidates) == 1 else None,
                    detail=f"{line.status} already listed in {where}",
                    first_listed=first,
                )
            )
        elif not candidates:
            results.append(
                Classified(MatchClass.MISSING_INTERNALLY, line, None, detail=f"no {line.provider} execution")
            )
        elif len(candidates) > 1:
            detail = f"{len(candidates)} executions carry this reference"
            results.append(Classified(MatchClass.AMBIGUOUS_REFERENCE, line, None, detail=detail))
        else:
            results.append(_compare(line, candidates[0]))

    unlisted = [
        record
        for record in unique.values()
        if record.status is ExecutionStatus.COMPLETED
        and period.contains(record.finished_at)
        and record.key not in listed
    ]
    for record in sorted(unlisted, key=lambda r: (*r.key, str(r.tenant_id), str(r.execution_id))):
        money = _money(record.amount, record.currency)
        detail = f"completed {money}; no {record.provider} file listed it"
        results.append(Classified(MatchClass.MISSING_FROM_FILE, None, record, detail=detail))
    return results


def _listing(line: SettlementLine) -> tuple[str, str, SettlementStatus, int | None]:
    """What makes a line the same item as another: a payment is listed once per status; a charge may have several
    refunds (or chargebacks), told apart by amount in a file that names no refund id."""
    reversal = line.status in (SettlementStatus.REFUNDED, SettlementStatus.CHARGEBACK)
    return line.provider, line.provider_reference, line.status, line.amount if reversal else None


def _compare(line: SettlementLine, record: InternalRecord) -> Classified:
    problems: list[MatchClass] = []
    notes: list[str] = []
    reversals = record.reversal_amounts(line.status)
    if line.currency != record.currency:
        problems.append(MatchClass.CURRENCY_MISMATCH)
        notes.append(f"provider {line.currency}, execution {record.currency}")
    elif reversals:
        # A refund or chargeback line is one reversal: it matches a recorded one of its amount, partial ones included.
        if line.amount not in reversals:
            problems.append(MatchClass.AMOUNT_MISMATCH)
            recorded = ", ".join(_money(amount, record.currency) for amount in reversals)
            notes.append(f"provider {line.status} {_money(line.amount, line.currency)}, recorded: {recorded}")
    elif line.amount != record.amount:
        problems.append(MatchClass.AMOUNT_MISMATCH)
        difference = line.amount - record.amount
        notes.append(
            f"provider {_money(line.amount, line.currency)}, execution {_money(record.amount, record.currency)} "
            f"(difference {_money(difference, line.currency)})"
        )
    if not status_agrees(line.status, record):
        problems.append(MatchClass.STATUS_MISMATCH)
        notes.append(f"provider says {line.status}, execution is {record.describe()}")
    if not problems:
        return Classified(MatchClass.MATCHED, line, record)
    return Classified(problems[0], line, record, also=tuple(problems[1:]), detail="; ".join(notes))


def _money(amount: int, currency: str) -> str:
    return Money(amount, currency).format()
