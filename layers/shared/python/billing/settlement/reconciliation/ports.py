"""What the reconciliation engine asks of the database, as one small Protocol (billing.db.settlement_queries)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Protocol
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
