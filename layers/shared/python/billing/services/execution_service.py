"""Creating executions idempotently: the three layers of duplicate protection in one place."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from billing.db.execution_repository import ExecutionRepository
from billing.domain.errors import IdempotencyKeyReused
from billing.domain.execution import Execution, ExecutionRequest, validate_idempotency_key
from billing.domain.workflow import WorkflowWriteContext


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """created=False means an earlier request with the same key and parameters already made this execution."""

    execution: Execution
    created: bool


class ExecutionService:
    def __init__(self, repository: ExecutionRepository) -> None:
        self._repository = repository

    def create(
        self,
        tenant_id: UUID,
        request: ExecutionRequest,
        *,
        idempotency_key: str,
        payment_provider: str,
        correlation_id: str | None,
        context: WorkflowWriteContext,
    ) -> CreateOutcome:
        """Create an execution exactly once per (tenant, idempotency key)."""
        key = validate_idempotency_key(idempotency_key)
        fingerprint = request.fingerprint()
        # Layer 1: the cheap read. Most retries end here without touching the write path.
        existing = self._repository.find_by_idempotency_key(tenant_id, key)
        if existing is not None:
            return CreateOutcome(_replay(existing, fingerprint, key), created=False)
        # Layer 2: the unique index decides between concurrent first requests.
        execution, created = self._repository.insert_idempotent(
            tenant_id,
            request,
            idempotency_key=key,
            payment_provider=payment_provider,
            correlation_id=correlation_id,
            context=context,
        )
        if created:
            return CreateOutcome(execution, created=True)
        return CreateOutcome(_replay(execution, fingerprint, key), created=False)


def _replay(existing: Execution, fingerprint: str, key: str) -> Execution:
    """The execution a repeated key stands for, or IdempotencyKeyReused if the parameters differ.

    Every status counts as a duplicate: created, pending and processing are in flight (a second charge would
    be a double charge), completed is done, and failed/canceled are final answers for this key — a client
    retries a declined charge with a new key, never by reusing the old one.
    """
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"idempotency key {key!r} was already used with different parameters "
            f"(execution {existing.id}); use a new key for a different request",
            execution_id=str(existing.id),
        )
    return existing
