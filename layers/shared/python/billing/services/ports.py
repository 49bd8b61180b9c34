"""Small ports the services depend on; adapters live next to the technology they wrap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from billing.domain.execution import Execution


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """Resubmit attempt number `attempt` of an execution no earlier than `not_before`."""

    tenant_id: UUID
    execution_id: UUID
    attempt: int
    not_before: datetime
    correlation_id: str | None


class RetryScheduler(Protocol):
    def schedule(self, request: RetryRequest) -> None:
        """Arrange for the retry worker to pick the request up at `not_before` (at least once)."""
        ...


class ExecutionObserver(Protocol):
    """Structured observability of the drive: one line per provider call and one per result."""

    def rail_call(
        self, execution: Execution, *, outcome: str, attempt: int, duration_ms: float, correlation_id: str | None
    ) -> None: ...

    def execution_result(self, execution: Execution, *, duration_ms: float, correlation_id: str | None) -> None: ...
