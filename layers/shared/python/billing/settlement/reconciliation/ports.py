"""What the reconciliation engine asks of the database: executions to match rows against
(billing.db.settlement_queries), and, for the fast path, staged lines decided in SQL (billing.db.settlement_staging)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol
from uuid import UUID

from billing.settlement.reconciliation.fee_bands import FeeBand
from billing.settlement.reconciliation.ours import OurExecution


class ExecutionLookup(Protocol):
    """Reads only, across tenants; each call is its own short transaction (none is held while a file streams)."""

    def find(self, provider: str, references: Collection[str], execution_ids: Collection[UUID]) -> list[OurExecution]:
        """The provider's executions carrying any of `references`, plus those whose id is one of `execution_ids`
        and that no reference found (the fallback when a row's reference is missing or unknown to us)."""
        ...

    def completed(self, provider: str, start: datetime, end: datetime) -> Iterator[list[OurExecution]]:
        """The provider's executions completed in [start, end), a page at a time (each page one transaction)."""
        ...

    def fee_bands(self, provider: str) -> list[FeeBand]:
        """Every tenant's expected fee bands for the provider (billing.settlement_fee_bands)."""
        ...


# The fee columns in the order the engine gives their positions; their totals are named by these.
FEE_TYPES: Final = ("commission", "markup", "scheme_fees", "interchange")


@dataclass(frozen=True, slots=True)
class StagedLayout:
    """Where one staged file's cells are: 1-based positions in a line's cells (None: the file lacks the column)."""

    width: int
    type: int
    psp_reference: int | None
    payment_method: int
    creation_date: int
    time_zone: int
    gross_currency: int
    gross_debit: int
    gross_credit: int
    net_currency: int
    net_debit: int
    net_credit: int
    batch: int
    exchange_rate: int | None
    fees: tuple[int | None, ...]  # in FEE_TYPES order


@dataclass(frozen=True, slots=True)
class MatchedSums:
    """What one file's matched lines add up to, per currency (they all settle in the currency they were paid in)."""

    file: int
    currency: str
    items: int
    gross: int
    net: int
    fees: int
    fee_types: Mapping[str, tuple[int, int]]  # fee type -> (sum, lines where it is not zero)
    payment_methods: Mapping[str, tuple[int, int]]  # payment method cell -> (fees, lines with a fee)
    batches: Mapping[str, tuple[int, int]]  # Batch Number cell -> (net, lines)


@dataclass(frozen=True, slots=True)
class Rules:
    """The parser's rules the statement applies to a cell, so that a line it matches is one the parser reads."""

    exponents: Mapping[str, int]  # every reportable currency's ISO 4217 exponent
    time_zones: Sequence[str]  # TimeZone cells with a fixed offset (the parser's abbreviations)
    max_amount: int  # the largest amount a cell may convert to, in minor units


class SettlementStaging(Protocol):
    """A run's files staged in the database, where one statement decides the lines that match exactly.

    Each call is its own transaction. The engine reads files from local disk while it stages them, and reads what
    comes back (spooled to local disk by the adapter) while it runs its own lookups.
    """

    def begin(self, provider: str) -> UUID:
        """A new run's id (and the staged rows of runs that died long ago deleted)."""
        ...

    def stage(self, run: UUID, file: int, lines: Iterable[tuple[int, str | None, list[str] | None]]) -> None:
        """One file's data lines: (physical line number, the line if it has no double quote, else its cells)."""
        ...

    def decide(self, run: UUID, provider: str, layouts: Sequence[StagedLayout], rules: Rules) -> list[MatchedSums]:
        """Record every line that matches exactly (listing its execution); their sums per file and currency."""
        ...

    def left_over(self, run: UUID) -> Iterator[tuple[int, int, list[str]]]:
        """Every other staged line as (file, line number, cells), in file and line order."""
        ...

    def expected(self, provider: str, start: datetime, end: datetime) -> dict[str, int]:
        """Amounts of the provider's executions completed in [start, end), per currency."""
        ...

    def unmatched(self, run: UUID, provider: str, start: datetime, end: datetime) -> Iterator[OurExecution]:
        """Those executions that no matched line listed, in (finished_at, tenant_id, id) order."""
        ...

    def discard(self, run: UUID) -> None:
        """Delete everything the run staged."""
        ...
