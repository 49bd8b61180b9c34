"""What the reconciliation engine asks of the database: executions to match rows against
(billing.db.settlement_queries), and, for the fast path, staged lines decided in SQL (billing.db.settlement_staging)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, NamedTuple, Protocol
from uuid import UUID

from billing.settlement.formats.adyen_sdr import FEE_COLUMNS
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


# The fee types a staged line carries, in StagedLine's fee_1 ... fee_4 order: the Adyen report's fee columns.
FEE_TYPES: Final = tuple(FEE_COLUMNS)


class StagedLine(NamedTuple):
    """One data line of a staged file: its number and Psp Reference cell; the rest is set only for an item the
    parser read as settled in one currency (gross and net alike), the only lines the database may match: its
    amounts in minor units, its fees (FEE_TYPES order, zero for a column the file lacks), currency, payment method
    and Batch Number (None when empty). Never the line's text: the engine keeps that on its own disk."""

    line_number: int
    psp_reference: str
    gross: int | None = None
    net: int | None = None
    fee_1: int | None = None
    fee_2: int | None = None
    fee_3: int | None = None
    fee_4: int | None = None
    currency: str | None = None
    payment_method: str | None = None
    batch: str | None = None


@dataclass(frozen=True, slots=True)
class MatchedSums:
    """What one file's matched lines add up to, per currency (they all settle in the currency they were paid in)."""

    file: int
    currency: str
    items: int
    gross: int
    net: int
    fees: int
    # Per fee type, the sum over the lines where it is not zero (a type no line charged is absent, as add() would
    # leave it); per payment method, the fees of the lines that charged any (likewise).
    fee_types: Mapping[str, int]
    payment_methods: Mapping[str | None, int]
    batches: Mapping[str | None, tuple[int, int]]  # Batch Number (None: empty) -> (net, lines)


class SettlementStaging(Protocol):
    """A run's files staged in the database, where one statement decides the lines that match exactly.

    Each call is its own transaction. The engine reads files from local disk while it stages them, and reads what
    comes back (spooled to local disk by the adapter) while it runs its own lookups.
    """

    def begin(self, provider: str) -> UUID:
        """A new run's id (and the staged rows of runs that died long ago deleted)."""
        ...

    def stage(self, run: UUID, file: int, lines: Iterable[StagedLine]) -> None:
        """One file's data lines, in line order."""
        ...

    def decide(self, run: UUID, provider: str) -> list[MatchedSums]:
        """Record every line that matches exactly (listing its execution); their sums per file and currency."""
        ...

    def left_over(self, run: UUID) -> Iterator[tuple[int, int]]:
        """Every other staged line as (file, line number), in file and line order."""
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
