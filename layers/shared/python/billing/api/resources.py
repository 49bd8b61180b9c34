"""What the API returns: pydantic models that also generate the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from billing.domain.execution import Execution, ExecutionEvent
from billing.domain.status import ExecutionStatus


class ExecutionResource(BaseModel):
    id: UUID
    status: ExecutionStatus
    awaiting_settlement: bool = Field(description="Pending at the provider (submitted), not merely pending")
    amount: int = Field(description="Integer minor units of `currency`")
    currency: str
    amount_display: str = Field(description="Human-readable amount, e.g. '19.99 EUR'")
    entity_contract_id: str
    plan_contract_id: str
    payment_rail: str
    payment_provider: str
    payment_instrument_id: str | None
    provider_reference: str | None
    idempotency_key: str | None
    correlation_id: str | None
    attempt_count: int
    last_error_code: str | None
    next_attempt_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, execution: Execution) -> ExecutionResource:
        return cls(
            id=execution.id,
            status=execution.status,
            awaiting_settlement=execution.awaiting_settlement,
            amount=execution.amount,
            currency=execution.currency,
            amount_display=execution.money.format(),
            entity_contract_id=execution.entity_contract_id,
            plan_contract_id=execution.plan_contract_id,
            payment_rail=execution.payment_rail.value,
            payment_provider=execution.payment_provider,
            payment_instrument_id=execution.payment_instrument_id,
            provider_reference=execution.provider_reference,
            idempotency_key=execution.idempotency_key,
            correlation_id=execution.correlation_id,
            attempt_count=execution.attempt_count,
            last_error_code=execution.last_error_code,
            next_attempt_at=execution.next_attempt_at,
            metadata=execution.metadata,
            created_at=execution.created_at,
            updated_at=execution.updated_at,
            submitted_at=execution.submitted_at,
            finished_at=execution.finished_at,
        )


class EventResource(BaseModel):
    id: UUID
    type: str
    old_status: ExecutionStatus | None
    new_status: ExecutionStatus
    metadata: dict[str, Any]
    user_id: str | None
    correlation_id: str | None
    occurred_at: datetime

    @classmethod
    def of(cls, event: ExecutionEvent) -> EventResource:
        return cls(
            id=event.id,
            type=event.type,
            old_status=event.old_status,
            new_status=event.new_status,
            metadata=event.metadata,
            user_id=event.user_id,
            correlation_id=event.correlation_id,
            occurred_at=event.occurred_at,
        )


class WorkflowPhaseResource(BaseModel):
    phase_code: str
    term_at: datetime
    source: str
    actor_id: str
    correlation_id: str | None


class ExecutionDetail(ExecutionResource):
    events: list[EventResource] = Field(description="Lifecycle timeline, oldest first")
    workflow: list[WorkflowPhaseResource] = Field(description="Authoritative workflow phases, oldest first")


class ExecutionPage(BaseModel):
    items: list[ExecutionResource]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page")
