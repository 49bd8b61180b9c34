"""Workflow vocabulary: the canonical configuration and the write context every transition carries."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final

from billing.domain.status import ExecutionStatus


class WorkflowPhase(StrEnum):
    """Phase codes written to billing.contract_term_datetimes: the six states plus two async milestones."""

    CREATED = "created"
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    SETTLEMENT_PENDING = "settlement_pending"
    RECONCILED = "reconciled"


class WorkflowSource(StrEnum):
    """Who caused a transition; lands in the workflow row's source column."""

    SERVICE = "service"
    WEBHOOK = "webhook"
    USER = "user"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class BillingWorkflowConfig:
    """Single source of truth for the billing workflow's identity and where its rows live."""

    WORKFLOW_KEY: ClassVar[str] = "wf:billing.execution"
    TARGET_TABLE: ClassVar[str] = "billing.contract_term_datetimes"
    SUBJECT_TYPE: ClassVar[str] = "billing_execution"
    DEFAULT_SOURCE: ClassVar[WorkflowSource] = WorkflowSource.SERVICE
    PHASE_CODES: ClassVar[tuple[WorkflowPhase, ...]] = tuple(WorkflowPhase)

    @staticmethod
    def phase_for_status(status: ExecutionStatus) -> WorkflowPhase:
        """The phase a plain status change lands in (the six states map one to one)."""
        return WorkflowPhase(status.value)


SERVICE_ACTOR: Final = "billing-engine"
SYSTEM_ACTOR: Final = "billing-system"


@dataclass(frozen=True, slots=True)
class WorkflowWriteContext:
    """Immutable who-and-why of a transition, passed explicitly at every call site (no globals)."""

    source: WorkflowSource
    actor: str

    def __post_init__(self) -> None:
        if not self.actor or len(self.actor) > 200:
            raise ValueError("workflow actor must be 1..200 characters")

    @classmethod
    def service_default(cls) -> WorkflowWriteContext:
        return cls(BillingWorkflowConfig.DEFAULT_SOURCE, SERVICE_ACTOR)

    @classmethod
    def webhook(cls, provider: str) -> WorkflowWriteContext:
        return cls(WorkflowSource.WEBHOOK, f"provider:{provider}")

    @classmethod
    def user(cls, user_id: str) -> WorkflowWriteContext:
        return cls(WorkflowSource.USER, f"user:{user_id}")

    @classmethod
    def system(cls) -> WorkflowWriteContext:
        return cls(WorkflowSource.SYSTEM, SYSTEM_ACTOR)
