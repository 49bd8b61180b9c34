"""The execute API's use cases: idempotent create-and-drive, read with timeline, list, cancel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from billing.db.execution_repository import ExecutionListQuery, ExecutionRepository
from billing.domain.errors import ExecutionNotFound, IdempotencyKeyReused, RiskReviewConflict, TransitionConflict
from billing.domain.execution import Execution, ExecutionEvent, ExecutionRequest, validate_idempotency_key
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.instruments.charging import ChargeableInstruments, ChargeRequest
from billing.instruments.model import is_instrument_id
from billing.providers.routing import ProviderRouter
from billing.rails.adapters import default_provider_for
from billing.rails.results import NextAction
from billing.risk.gate import NO_SIGNALS, ClientSignals
from billing.risk.reviews import ReviewDecision, ReviewStore
from billing.services.execution_driver import ExecutionDriver

_CANCELABLE = (ExecutionStatus.CREATED, ExecutionStatus.PENDING)


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    """created=False means an earlier request with the same key and parameters already made this execution."""

    execution: Execution
    created: bool
    # What the customer must do next, when this request submitted a charge that waits for them (3-D Secure).
    next_action: NextAction | None = None


@dataclass(frozen=True, slots=True)
class ExecutionView:
    execution: Execution
    events: list[ExecutionEvent]
    workflow: list[dict[str, Any]]


class ExecutionService:
    def __init__(
        self,
        repository: ExecutionRepository,
        driver: ExecutionDriver | None = None,
        instruments: ChargeableInstruments | None = None,
        router: ProviderRouter | None = None,
        *,
        reviews: ReviewStore | None = None,
    ) -> None:
        self._repository = repository
        self._reviews = reviews
        self._driver = driver
        # Chooses the provider when a caller names none (the API); None: the rail's default provider.
        self._router = router
        # Vault instruments (pi_...) are checked before a charge is created with one; None: not checked (tools).
        self._instruments = instruments

    def create(
        self,
        tenant_id: UUID,
        request: ExecutionRequest,
        *,
        idempotency_key: str,
        payment_provider: str | None,
        correlation_id: str | None,
        context: WorkflowWriteContext,
        accept: bool = False,
    ) -> CreateOutcome:
        """Create an execution exactly once per (tenant, idempotency key); payment_provider None: routed by the
        instrument (a replay keeps the provider it was created with). `accept`: created as pending, in the same
        transaction (execute drives it on at once)."""
        key = validate_idempotency_key(idempotency_key)
        fingerprint = request.fingerprint()
        held: frozenset[str] = frozenset()
        instrument_id = request.payment_instrument_id
        if self._instruments is not None and instrument_id is not None and is_instrument_id(instrument_id):
            # Layer 1, only where something runs before the insert: a replay ends here, answered as it was first
            # answered, even if its vault instrument has since been detached, and the instrument is not read again.
            # Any other request goes straight to the insert, which answers a replay as well (nothing is written on
            # a conflict) and spares a first request a round trip and a transaction.
            existing = self._repository.find_by_idempotency_key(tenant_id, key)
            if existing is not None:
                return CreateOutcome(_replay(existing, fingerprint, key), created=False)
            # Same tenant, same entity contract, active, not past its month, the right rail: else 404/422 and
            # nothing written. The sandbox's magic tokens (tok_visa, ...) are provider tokens, not checked here.
            held = self._instruments.authorize_charge(
                ChargeRequest(
                    tenant_id,
                    instrument_id,
                    request.entity_contract_id,
                    request.payment_rail,
                    actor=context.actor,
                    correlation_id=correlation_id,
                )
            )
        if payment_provider is None:
            payment_provider = (
                self._router.provider_for(request, held)
                if self._router is not None
                else default_provider_for(request.payment_rail)
            )
        # Layer 2: the unique index decides between concurrent first requests.
        execution, created = self._repository.insert_idempotent(
            tenant_id,
            request,
            idempotency_key=key,
            payment_provider=payment_provider,
            correlation_id=correlation_id,
            context=context,
            accept=accept,
        )
        if created:
            return CreateOutcome(execution, created=True)
        return CreateOutcome(_replay(execution, fingerprint, key), created=False)

    def execute(
        self,
        tenant_id: UUID,
        request: ExecutionRequest,
        *,
        idempotency_key: str,
        payment_provider: str | None,
        correlation_id: str | None,
        context: WorkflowWriteContext,
        signals: ClientSignals = NO_SIGNALS,
    ) -> CreateOutcome:
        """Create (or find) the execution and drive it; a replay resumes one whose first request stalled (or shows
        one waiting for review or 3-D Secure where it waits). `signals`: the client's device and IP, for risk."""
        assert self._driver is not None, "execute needs a driver"
        outcome = self.create(
            tenant_id,
            request,
            idempotency_key=idempotency_key,
            payment_provider=payment_provider,
            correlation_id=correlation_id,
            context=context,
            accept=True,
        )
        driven = self._driver.drive_with_action(
            outcome.execution, correlation_id=correlation_id, context=context, signals=signals
        )
        return CreateOutcome(driven.execution, outcome.created, driven.next_action)

    def review(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        decision: ReviewDecision,
        *,
        note: str | None,
        correlation_id: str | None,
        context: WorkflowWriteContext,
    ) -> CreateOutcome:
        """An operator's decision on an execution held for review: approved, it is driven on at once (3-D Secure
        may still be asked); rejected, it fails. RiskReviewConflict if it is not waiting for one."""
        assert self._driver is not None, "review needs a driver"
        assert self._reviews is not None, "review needs the review store"
        if decision is ReviewDecision.EXPIRED:
            raise ValueError("only the review timeout expires a review")
        execution = self._require(tenant_id, execution_id)
        held = self._reviews.held_by(tenant_id, execution_id)
        if execution.status is not ExecutionStatus.PENDING or execution.submitted_at is not None or held is None:
            raise RiskReviewConflict(
                f"execution {execution_id} is not waiting for a review", execution_id=str(execution_id)
            )
        _, current = self._reviews.decide(
            execution, held.id, decision, decided_by=context.actor, note=note, context=context,
            correlation_id=correlation_id,
        )  # fmt: skip
        if decision is ReviewDecision.REJECT:
            return CreateOutcome(current, created=False)
        driven = self._driver.drive_with_action(current, correlation_id=correlation_id, context=context)
        return CreateOutcome(driven.execution, created=False, next_action=driven.next_action)

    def view(self, tenant_id: UUID, execution_id: UUID) -> ExecutionView:
        execution = self._require(tenant_id, execution_id)
        return ExecutionView(
            execution,
            self._repository.events(tenant_id, execution_id),
            self._repository.workflow_phases(tenant_id, execution_id),
        )

    def list_page(self, tenant_id: UUID, query: ExecutionListQuery) -> tuple[list[Execution], bool]:
        return self._repository.list_page(tenant_id, query)

    def cancel(
        self, tenant_id: UUID, execution_id: UUID, *, correlation_id: str | None, context: WorkflowWriteContext
    ) -> Execution:
        """created|pending (not yet submitted) -> canceled; TransitionConflict for any other state."""
        current = self._require(tenant_id, execution_id)
        # Two tries: the guard names the status we saw, and created -> pending may happen in between.
        for _ in range(2):
            if current.status not in _CANCELABLE or current.submitted_at is not None:
                break
            try:
                return self._repository.mark_canceled(
                    tenant_id, execution_id, context, from_status=current.status, correlation_id=correlation_id
                )
            except TransitionConflict:
                current = self._require(tenant_id, execution_id)
        raise TransitionConflict(str(execution_id), tuple(s.value for s in _CANCELABLE), current.status.value)

    def _require(self, tenant_id: UUID, execution_id: UUID) -> Execution:
        execution = self._repository.get(tenant_id, execution_id)
        if execution is None:
            # Also for another tenant's id: do not confirm that it exists.
            raise ExecutionNotFound(f"execution {execution_id} not found", execution_id=str(execution_id))
        return execution


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
