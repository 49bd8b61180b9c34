"""Classifying one provider row against our side: the execution its reference names and that execution's reversals.

Pure: the engine streams the rows and looks the executions up a chunk at a time; the Matcher decides, and keeps
across chunks only what a later row can depend on, compactly (reconciliation.keys):

* every item's identity, so the same item listed again is `duplicate_in_file` (pointing at the first listing) and
  is never matched twice;
* which executions had their payment listed, so the period's completed executions nobody listed are
  `missing_from_file` at the end;
* per execution with reversal rows, which recorded reversals those rows used and how much money went back, so
  several partial refunds each match their own recorded refund, by amount, and the reversals in the files never
  add up to more than the payment.

Payments (settled, and the sandbox's failed) are compared on currency, then amount, then status, then fees; the
first problem is the class and the others are kept in `also`. Reversals (refunds, chargebacks, their reversals and
second chargebacks) are compared on currency, then status (money can only go back on a completed payment), then
matched by amount against the recorded reversals of their kind. Amounts are compared in the item's own currency:
Adyen's gross currency, Stripe's customer-facing currency when the balance currency differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from billing.domain.money import Money
from billing.domain.reversals import ReversalKind
from billing.domain.status import ExecutionStatus
from billing.settlement.formats.records import ProviderRecord, RecordKind
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.reconciliation.fee_bands import FeeBands
from billing.settlement.reconciliation.findings import Finding
from billing.settlement.reconciliation.keys import SEPARATOR, KeyTable, digest_text, execution_key
from billing.settlement.reconciliation.ours import REVERSAL_KINDS_OF, OurExecution
from billing.settlement.reconciliation.totals import row_fees

C = DiscrepancyClass

PAYMENT_KINDS: Final = frozenset({RecordKind.SETTLED, RecordKind.FAILED})
REVERSAL_KINDS: Final = frozenset(REVERSAL_KINDS_OF)
MATCHED_KINDS: Final = PAYMENT_KINDS | REVERSAL_KINDS
# What our execution must be for the provider's payment row to agree.
_PAYMENT_STATUS: Final = {RecordKind.SETTLED: ExecutionStatus.COMPLETED, RecordKind.FAILED: ExecutionStatus.FAILED}
# Rows that take money back from us (negative gross); a chargeback reversal gives it back.
_MONEY_BACK: Final = frozenset({RecordKind.REFUNDED, RecordKind.CHARGEBACK, RecordKind.SECOND_CHARGEBACK})
_LINE_BITS: Final = 32
_TABLE_CAPACITY: Final = 1 << 17
# What one reversal row is called in a detail.
_NOUN: Final = {
    RecordKind.REFUNDED: "refund",
    RecordKind.CHARGEBACK: "chargeback",
    RecordKind.SECOND_CHARGEBACK: "second chargeback",
    RecordKind.CHARGEBACK_REVERSED: "chargeback reversal",
}


@dataclass(frozen=True, slots=True)
class Candidates:
    """What one chunk's lookup found: executions by provider reference and by execution id (the fallback)."""

    by_reference: Mapping[str, Sequence[OurExecution]]
    by_id: Mapping[UUID, Sequence[OurExecution]]

    @classmethod
    def of(cls, executions: Iterable[OurExecution]) -> Candidates:
        """Both indexes of what the lookups returned; an execution returned twice counts once."""
        by_reference: dict[str, list[OurExecution]] = {}
        by_id: dict[UUID, list[OurExecution]] = {}
        for execution in executions:
            same_id = by_id.get(execution.execution_id)
            if same_id is None:
                by_id[execution.execution_id] = [execution]
            elif any(e.tenant_id == execution.tenant_id for e in same_id):
                continue
            else:
                same_id.append(execution)
            reference = execution.provider_reference
            if reference is not None:
                same_reference = by_reference.get(reference)
                if same_reference is None:
                    by_reference[reference] = [execution]
                else:
                    same_reference.append(execution)
        return cls(by_reference, by_id)


def execution_id_in(record: ProviderRecord) -> UUID | None:
    """Our execution id as the provider echoes it (Adyen Merchant Reference, Stripe payment_metadata[execution_id])."""
    text = record.merchant_reference
    if not text or len(text) != 36:
        return None
    try:
        return UUID(text)
    except ValueError:
        return None


def references_needed(records: Iterable[ProviderRecord]) -> set[str]:
    """The provider references a chunk's item rows name: the chunk's first lookup."""
    return {r.provider_reference for r in records if r.provider_reference and r.kind in MATCHED_KINDS}


def ids_needed(records: Iterable[ProviderRecord], found: Candidates) -> set[UUID]:
    """The execution ids echoed by item rows their reference did not find: the fallback lookup, usually empty (so
    a healthy file costs one statement a chunk, and no id is parsed for a row its reference found)."""
    ids: set[UUID] = set()
    for record in records:
        if record.kind not in MATCHED_KINDS:
            continue
        if record.provider_reference and record.provider_reference in found.by_reference:
            continue
        execution_id = execution_id_in(record)
        if execution_id is not None and execution_id not in found.by_id:
            ids.add(execution_id)
    return ids


@dataclass(slots=True)
class _Reversals:
    """What the rows read so far did with one execution's reversals."""

    used: set[int] = field(default_factory=set)  # indexes into OurExecution.reversals
    back: int = 0  # money gone back in the files read, minor units of the execution's currency


@dataclass(slots=True)
class _Problems:
    classes: list[DiscrepancyClass] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expected: tuple[int | None, str | None] = (None, None)

    def add(self, klass: DiscrepancyClass, note: str) -> None:
        self.classes.append(klass)
        self.notes.append(note)


class Matcher:
    """One report's classifier; feed it the rows of the look-back files first, then the period's."""

    def __init__(self, provider: str, fee_bands: FeeBands | None = None) -> None:
        self._provider = provider
        self._bands = fee_bands or FeeBands()
        # Sized for a busy day from the start (2 MB each): growing by doubling rehashes every key in Python.
        self._seen = KeyTable(_TABLE_CAPACITY)  # item digest -> (source index << 32) | line
        self._sources: list[str] = []
        self._source_index: dict[str, int] = {}
        self._listed = KeyTable(_TABLE_CAPACITY)  # execution digests whose payment some row listed
        self._reversals: dict[int, _Reversals] = {}
        self.matched = 0

    def is_listed(self, execution: OurExecution) -> bool:
        return execution_key(execution.tenant_id, execution.execution_id) in self._listed

    def unlisted(self, executions: Iterable[OurExecution], expected: dict[str, int]) -> list[OurExecution]:
        """The executions no payment row listed, adding each one's amount to `expected` by currency (the period
        scan: every completed execution of the period, a page at a time)."""
        listed = self._listed.get
        left: list[OurExecution] = []
        for execution in executions:
            currency = execution.currency
            expected[currency] = expected.get(currency, 0) + execution.amount
            if listed(execution_key(execution.tenant_id, execution.execution_id)) is None:
                left.append(execution)
        return left

    def classify(
        self, record: ProviderRecord, found: Candidates, *, batch: str | None = None, report: bool = True
    ) -> Finding | None:
        """The row's finding, or None when it matched (counted in `matched`) or is not an item (fees, payouts).

        With report=False (a look-back file) nothing is reported or counted, but the row still takes its place:
        it is listed, it makes a later copy a duplicate, and it uses the reversal it matches.
        """
        kind = record.kind
        if kind is RecordKind.OTHER:
            if not report:
                return None
            money = record.gross_amount or record.net_amount
            currency = record.gross_currency if record.gross_amount else record.net_currency
            detail = f"type {record.raw_type!r} is not one we map; counted in its batch's net, not matched"
            return self._finding(record, C.UNMAPPED_TYPE, None, (None, None), (money, currency), detail, (), batch)
        if kind not in MATCHED_KINDS:
            return None

        # The common case first, without a call: the reference names the execution(s).
        reference = record.provider_reference
        by_reference = found.by_reference.get(reference) if reference else None
        candidates, conflict = (by_reference, False) if by_reference else self._candidates(record, found)
        first_listed = self._seen.setdefault(digest_text(_identity(record)), self._location(record))
        if first_listed is not None:
            if not report:
                return None
            where = self._where(first_listed)
            ours = candidates[0] if len(candidates) == 1 and not conflict else None
            detail = f"{record.raw_type} already listed in {where}"
            return self._finding(record, C.DUPLICATE_IN_FILE, ours, (None, None), _reported(record), detail, (), batch)
        if kind in PAYMENT_KINDS and not conflict:
            listed = self._listed
            for execution in candidates:
                listed.add(execution_key(execution.tenant_id, execution.execution_id))
        if not candidates or conflict:
            if not report:
                return None
            return self._missing_internally(record, candidates[0] if conflict else None, batch)
        if len(candidates) > 1:
            if not report:
                return None
            detail = f"{len(candidates)} executions carry this reference"
            return self._finding(
                record, C.AMBIGUOUS_REFERENCE, None, (None, None), _reported(record), detail, (), batch
            )

        (execution,) = candidates
        if kind in PAYMENT_KINDS and self._payment_agrees(record, execution):
            if report:
                self.matched += 1
            return None
        problems = self._payment(record, execution) if kind in PAYMENT_KINDS else self._reversal(record, execution)
        if not report:
            return None
        if not problems.classes:
            self.matched += 1
            return None
        return self._finding(
            record,
            problems.classes[0],
            execution,
            problems.expected,
            _reported(record) if problems.classes[0] is not C.FEE_OUT_OF_RANGE else self._fee_reported(record),
            "; ".join(problems.notes),
            tuple(problems.classes[1:]),
            batch,
        )

    # --- our side ---------------------------------------------------------------------------------------------------

    def _candidates(self, record: ProviderRecord, found: Candidates) -> tuple[Sequence[OurExecution], bool]:
        """The executions the row names, and whether the one found by id is recorded under another reference."""
        reference = record.provider_reference
        if reference:
            by_reference = found.by_reference.get(reference)
            if by_reference:
                return by_reference, False
        execution_id = execution_id_in(record)
        if execution_id is None:
            return [], False
        by_id = [e for e in found.by_id.get(execution_id, ()) if e.provider == self._provider]
        # The id fallback finds a charge we never stored a reference for, or one we know only by our own reference
        # (Adyen before its pspReference). Under another reference of the provider's, the row is not that charge:
        # perhaps a second charge for the same execution, money we have no execution for.
        conflict = (
            len(by_id) == 1
            and reference is not None
            and by_id[0].provider_reference is not None
            and not by_id[0].named_by_our_reference()
        )
        return by_id, conflict

    def _missing_internally(
        self, record: ProviderRecord, recorded_elsewhere: OurExecution | None, batch: str | None
    ) -> Finding:
        if recorded_elsewhere is not None:
            detail = (
                f"no {self._provider} execution carries this reference; its merchant reference names execution "
                f"{recorded_elsewhere.execution_id}, recorded under {recorded_elsewhere.provider_reference} "
                "(a second charge?)"
            )
        else:
            execution_id = execution_id_in(record)
            detail = f"no {self._provider} execution carries this reference" + (
                f" or the id {execution_id}" if execution_id is not None else ""
            )
        return self._finding(
            record, C.MISSING_INTERNALLY, recorded_elsewhere, (None, None), _reported(record), detail, (), batch
        )

    # --- payments ---------------------------------------------------------------------------------------------------

    def _payment_agrees(self, record: ProviderRecord, execution: OurExecution) -> bool:
        """True exactly when _payment would find no problem: the common case, decided without building any."""
        amount, currency = _reported(record)
        if currency != execution.currency or amount != execution.amount:
            return False
        if execution.status is not _PAYMENT_STATUS[record.kind]:
            return False
        if record.kind is not RecordKind.SETTLED or record.gross_currency != record.net_currency:
            return True
        band = self._bands.band_for(execution.tenant_id, record.payment_method, record.net_currency)
        if band is None:
            return True
        low, high = band.bounds(record.gross_amount)
        # A settled row's fees are its fee columns (row_fees' fallback is for fee rows), zeros adding nothing.
        return low <= sum(record.fees.values()) <= high

    def _payment(self, record: ProviderRecord, execution: OurExecution) -> _Problems:
        problems = _Problems(expected=(execution.amount, execution.currency))
        amount, currency = _reported(record)
        if currency != execution.currency:
            problems.add(C.CURRENCY_MISMATCH, f"provider {currency}, execution {execution.currency}")
        elif amount != execution.amount:
            difference = _money(amount - execution.amount, currency)
            problems.add(
                C.AMOUNT_MISMATCH,
                f"provider {_money(amount, currency)}, execution {_money(execution.amount, execution.currency)} "
                f"(difference {difference})",
            )
        if execution.status is not _PAYMENT_STATUS[record.kind]:
            problems.add(C.STATUS_MISMATCH, f"provider says {record.raw_type}, execution is {execution.describe()}")
        if record.kind is RecordKind.SETTLED and C.CURRENCY_MISMATCH not in problems.classes:
            self._fee_band(record, execution, problems)
        return problems

    def _fee_band(self, record: ProviderRecord, execution: OurExecution, problems: _Problems) -> None:
        # Fees are in the net currency and a band is per currency: a row settled in another currency than it was
        # paid in (FX) has no single currency to hold its fees against its gross, and is not checked.
        if record.gross_currency != record.net_currency:
            return
        band = self._bands.band_for(execution.tenant_id, record.payment_method, record.net_currency)
        if band is None:
            return
        fees = sum(row_fees(record).values())
        low, high = band.bounds(record.gross_amount)
        if low <= fees <= high:
            return
        currency = record.net_currency
        if not problems.classes:
            problems.expected = (high if fees > high else low, currency)
        problems.add(
            C.FEE_OUT_OF_RANGE,
            f"fees {_money(fees, currency)} outside {_money(low, currency)}-{_money(high, currency)} "
            f"({band.describe()})",
        )

    def _fee_reported(self, record: ProviderRecord) -> tuple[int | None, str | None]:
        return sum(row_fees(record).values()), record.net_currency

    # --- reversals --------------------------------------------------------------------------------------------------

    def _reversal(self, record: ProviderRecord, execution: OurExecution) -> _Problems:
        problems = _Problems()
        amount, currency = _reported(record)
        if currency != execution.currency:
            problems.expected = (execution.amount, execution.currency)
            problems.add(C.CURRENCY_MISMATCH, f"provider {currency}, execution {execution.currency}")
            return problems
        if execution.status is not ExecutionStatus.COMPLETED:
            problems.expected = (execution.amount, execution.currency)
            problems.add(C.STATUS_MISMATCH, f"provider says {record.raw_type}, execution is {execution.describe()}")
            return problems
        takes_back = record.kind in _MONEY_BACK
        if (record.gross_amount < 0) != takes_back or record.gross_amount == 0:
            direction = "takes money back" if takes_back else "gives money back"
            problems.add(
                C.AMOUNT_MISMATCH,
                f"provider {record.raw_type} moves {_money(record.gross_amount, record.gross_currency)}; "
                f"a {_NOUN[record.kind]} {direction}",
            )
            return problems

        key = execution_key(execution.tenant_id, execution.execution_id)
        state = self._reversals.get(key)
        if state is None:
            state = self._reversals[key] = _Reversals()
        back = amount if takes_back else -amount
        said = f"provider {record.raw_type} {_money(amount, currency)}"
        if state.back + back > execution.amount:
            state.back += back
            problems.add(
                C.REVERSAL_MISSING,
                f"{said}: the files' reversals of this payment come to {_money(state.back, currency)}, "
                f"over its {_money(execution.amount, currency)}",
            )
            return problems
        state.back += back
        kinds = REVERSAL_KINDS_OF[record.kind]
        reversals = execution.reversals
        open_ones = [i for i, r in enumerate(reversals) if i not in state.used and r.kind in kinds]
        chosen = next((i for i in open_ones if reversals[i].amount == amount), None)
        if chosen is None:
            # Reversals recorded before amounts existed stand for any one line, once.
            chosen = next(
                (i for i, r in enumerate(reversals) if i not in state.used and r.kind is ReversalKind.UNSPECIFIED),
                None,
            )
        if chosen is not None:
            state.used.add(chosen)
            return problems
        what = _NOUN[record.kind]
        amounts = [left for i in open_ones if (left := reversals[i].amount) is not None]
        if amounts:
            problems.expected = (amounts[0], currency)
            recorded = ", ".join(_money(a, currency) for a in amounts)
            problems.add(C.REVERSAL_AMOUNT_MISMATCH, f"{said}, recorded: {recorded}")
            return problems
        used = [reversals[i].amount for i in sorted(state.used) if reversals[i].kind in kinds]
        note = f"{said}; no {what} of that amount recorded"
        if used:
            note += " (the recorded ones, " + ", ".join(_money(a or 0, currency) for a in used) + ", match other lines)"
        problems.add(C.REVERSAL_MISSING, note)
        return problems

    # --- findings ---------------------------------------------------------------------------------------------------

    def _location(self, record: ProviderRecord) -> int:
        index = self._source_index.get(record.source)
        if index is None:
            index = self._source_index[record.source] = len(self._sources)
            self._sources.append(record.source)
        return (index << _LINE_BITS) | record.line_number

    def _where(self, location: int) -> str:
        return f"{self._sources[location >> _LINE_BITS]} line {location & ((1 << _LINE_BITS) - 1)}"

    def _finding(
        self,
        record: ProviderRecord,
        klass: DiscrepancyClass,
        execution: OurExecution | None,
        expected: tuple[int | None, str | None],
        reported: tuple[int | None, str | None],
        detail: str,
        also: tuple[DiscrepancyClass, ...],
        batch: str | None,
    ) -> Finding:
        return Finding(
            discrepancy_class=klass,
            source=record.source,
            line_number=record.line_number,
            provider_reference=record.provider_reference,
            record_kind=record.kind.value,
            tenant_id=None if execution is None else execution.tenant_id,
            execution_id=None if execution is None else execution.execution_id,
            expected_amount=expected[0],
            expected_currency=expected[1],
            reported_amount=reported[0],
            reported_currency=reported[1],
            detail=detail,
            also=also,
            batch=batch,
            payment_method=record.payment_method,
        )


def _identity(record: ProviderRecord) -> str:
    """What makes two rows the same item, as digest_text digests it (digest64 of the parts). A payment is listed
    once per kind (a partial capture has its own modification reference); a charge may have several refunds or
    chargebacks, told apart by their own reference where the provider gives one, else by amount and time."""
    # RecordKind is a StrEnum: the member formats as its value, without the enum's slower .value lookup.
    parts = (
        f"{record.kind}{SEPARATOR}{record.provider_reference or ''}{SEPARATOR}{record.merchant_reference or ''}"
        f"{SEPARATOR}{record.secondary_reference or ''}"
    )
    if record.kind in PAYMENT_KINDS:
        return parts
    return f"{parts}{SEPARATOR}{record.gross_amount}{SEPARATOR}{record.created_at.isoformat()}"


def _reported(record: ProviderRecord) -> tuple[int, str]:
    """The item's own amount and currency: the customer-facing figures when the provider gives them (Stripe, the
    sandbox), else the gross; a magnitude for reversals, signed for payments (a negative payment is wrong)."""
    if record.customer_facing_amount is not None and record.customer_facing_currency is not None:
        amount, currency = record.customer_facing_amount, record.customer_facing_currency
        if record.kind in PAYMENT_KINDS:
            return (amount if record.gross_amount >= 0 else -abs(amount)), currency
        return abs(amount), currency
    if record.kind in PAYMENT_KINDS:
        return record.gross_amount, record.gross_currency
    return abs(record.gross_amount), record.gross_currency


def _money(amount: int, currency: str) -> str:
    return Money(amount, currency).format()
