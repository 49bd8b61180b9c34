"""Webhook processing: verify a delivery, then apply each event it reports to its execution exactly once.

Each event is one transaction (one atomic phase):

1. claim the event's inbox row (provider, provider event id). A redelivery finds the row and gets the stored result
   back with no second effect; concurrent deliveries of one event queue on the row's primary key;
2. find the execution by (provider, provider reference) across tenants;
3. decide with ACTIONS (reported outcome x current status) and apply through the repository's status-guarded
   transitions, or record a reversal beside the unchanged row. A success reporting another amount or currency than
   the execution's is never applied: it is recorded as an amount_mismatch event beside the unchanged row, for an
   operator;
4. resolve the inbox row with the result.

Out-of-order deliveries are settled by the status guard, never by last-write-wins: whichever writer (this event,
another event, the reconciliation worker) moves a pending execution first wins, and every later writer sees the
final status and decides again from it. A "retry later" decision rolls the whole transaction back, claim included,
so the provider's redelivery is processed afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Protocol, assert_never

import psycopg

from billing.db.attempts import annotate
from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import ReversalRepository
from billing.db.tenancy import apply_timeouts
from billing.db.webhook_inbox import AmountMismatches, ExecutionRef, WebhookInbox
from billing.domain.errors import TransitionConflict
from billing.domain.money import Money
from billing.domain.reversals import PAID_AFTER_FAILURE_EVENT_TYPE
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.services.reversal_reports import ReversalApplier
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from billing.webhooks.registry import WebhookProvider, provider_for
from billing.webhooks.verification import RawWebhook


class WebhookAction(StrEnum):
    """What an acting event does to the execution it references, given that execution's current status."""

    CONFIRM = "confirm"  # confirm_from_pending: pending -> completed
    REJECT = "reject"  # reject_from_pending: pending -> failed
    RECORD_REVERSAL = "record_reversal"  # completed stays completed; the reversal is recorded beside it
    ACKNOWLEDGE = "acknowledge"  # the execution already ended the way the event reports
    RECORD_OUT_OF_ORDER = "record_out_of_order"  # the event contradicts a final status reached earlier
    RETRY_LATER = "retry_later"  # the execution cannot take the event yet: 409, the provider redelivers
    # Instead of CONFIRM when the event reports another amount or currency: recorded, the execution stays pending.
    RECORD_AMOUNT_MISMATCH = "record_amount_mismatch"
    # A success for an execution that already failed or was canceled: money may have moved that nothing books.
    # Never applied (the row is final); flagged for an operator with an event and an outbox message.
    FLAG_PAID_AFTER_FAILURE = "flag_paid_after_failure"


class WebhookResult(StrEnum):
    """What processing an event did; every value but RETRY_LATER is stored in the inbox row."""

    APPLIED = "applied"
    ALREADY_TERMINAL = "already_terminal"
    OUT_OF_ORDER = "out_of_order"
    REVERSAL = "reversal"
    IGNORED = "ignored"
    # No execution carries the reference: acknowledged (providers retry for days otherwise) and kept for investigation.
    ORPHAN = "orphan"
    # Executions of several tenants carry the reference: nothing is guessed, the event is kept for investigation.
    AMBIGUOUS = "ambiguous"
    # A success of another amount or currency than the execution's: not applied, flagged and left for an operator.
    AMOUNT_MISMATCH = "amount_mismatch"
    RETRY_LATER = "retry_later"


STORED_RESULTS: Final = frozenset(WebhookResult) - {WebhookResult.RETRY_LATER}

_O = WebhookOutcome
_S = ExecutionStatus
_A = WebhookAction

# Outcomes that concern a payment; IGNORED events are recorded without looking their reference up.
ACTING_OUTCOMES: Final = (_O.SUCCEEDED, _O.FAILED, _O.REVERSED)

# The one table from (reported outcome, current status) to action; a unit test proves it covers every pair.
# Decisions worth a why:
# - FAILED for a completed execution is out of order, not a reversal: parsers report money coming back after a
#   success (refund, chargeback, late failure) as REVERSED; a plain "failed" after "completed" is a stale report.
# - SUCCEEDED for a failed or canceled execution contradicts a final status and may mean money moved (Stripe: an
#   intent that failed can still succeed if confirmed again): never rewritten (the row is immutable), but flagged
#   for an operator with a paid_after_failure event, unlike the other contradictions, which only record the event.
# - created/processing: the execution is still being submitted, so its own attempt decides first; the provider
#   redelivers after the 409. The same for a reversal of a payment we have not seen complete yet: reconciliation
#   or the success event will complete it, and the redelivered reversal then finds it completed.
ACTIONS: Final[Mapping[tuple[WebhookOutcome, ExecutionStatus], WebhookAction]] = MappingProxyType(
    {
        (_O.SUCCEEDED, _S.CREATED): _A.RETRY_LATER,
        (_O.SUCCEEDED, _S.PENDING): _A.CONFIRM,
        (_O.SUCCEEDED, _S.PROCESSING): _A.RETRY_LATER,
        (_O.SUCCEEDED, _S.COMPLETED): _A.ACKNOWLEDGE,
        (_O.SUCCEEDED, _S.FAILED): _A.FLAG_PAID_AFTER_FAILURE,
        (_O.SUCCEEDED, _S.CANCELED): _A.FLAG_PAID_AFTER_FAILURE,
        (_O.FAILED, _S.CREATED): _A.RETRY_LATER,
        (_O.FAILED, _S.PENDING): _A.REJECT,
        (_O.FAILED, _S.PROCESSING): _A.RETRY_LATER,
        (_O.FAILED, _S.COMPLETED): _A.RECORD_OUT_OF_ORDER,
        (_O.FAILED, _S.FAILED): _A.ACKNOWLEDGE,
        # No money moved on either side: nothing to do.
        (_O.FAILED, _S.CANCELED): _A.ACKNOWLEDGE,
        (_O.REVERSED, _S.CREATED): _A.RETRY_LATER,
        (_O.REVERSED, _S.PENDING): _A.RETRY_LATER,
        (_O.REVERSED, _S.PROCESSING): _A.RETRY_LATER,
        (_O.REVERSED, _S.COMPLETED): _A.RECORD_REVERSAL,
        # Nothing was collected, so nothing can come back: a contradiction to look at.
        (_O.REVERSED, _S.FAILED): _A.RECORD_OUT_OF_ORDER,
        (_O.REVERSED, _S.CANCELED): _A.RECORD_OUT_OF_ORDER,
    }
)

# The result of each action that writes nothing to the execution.
_RESULT_WITHOUT_WRITE: Final = MappingProxyType(
    {
        _A.ACKNOWLEDGE: WebhookResult.ALREADY_TERMINAL,
        _A.RECORD_OUT_OF_ORDER: WebhookResult.OUT_OF_ORDER,
        _A.RETRY_LATER: WebhookResult.RETRY_LATER,
    }
)

# A failed execution always carries an error code; some providers report failures without a reason.
UNSPECIFIED_FAILURE_CODE: Final = "provider_reported_failure"

# The status found by the lookup, then once more the status revealed by a lost race. A third look would only be
# needed if the execution went back to pending in between, which the provider's redelivery handles (409).
_DECISIONS_PER_EVENT: Final = 2


def action_for(outcome: WebhookOutcome, status: ExecutionStatus) -> WebhookAction:
    """The action for an acting outcome and the execution's current status (KeyError for IGNORED)."""
    return ACTIONS[(outcome, status)]


@dataclass(frozen=True, slots=True)
class AmountMismatch:
    """What the execution charges against what the provider reports as paid."""

    expected: Money
    received: Money


def amount_mismatch(event: WebhookEvent, execution: ExecutionRef) -> AmountMismatch | None:
    """The difference between the event's amount and the execution's; None if the event names none, or the same."""
    if event.amount is None or event.currency is None:
        return None  # the provider does not say (GoCardless): nothing to compare
    if execution.amount is None or execution.currency is None:
        raise ValueError("compare amounts only with an execution looked up by its provider reference")
    expected, received = Money(execution.amount, execution.currency), Money(event.amount, event.currency)
    return None if received == expected else AmountMismatch(expected, received)


def decide(event: WebhookEvent, execution: ExecutionRef) -> WebhookAction:
    """ACTIONS for the event's outcome and the execution's status, with the one check the table cannot make.

    A confirmation of another amount or currency is held back: money moved, but not the money this execution
    charges, so completing it would book what was not paid (a partial capture, a currency conversion, a reference
    reused for another payment). Only a confirmation is checked. A failure reporting another amount still fails
    the execution: no money moved either way, so there is nothing an operator could book differently.
    """
    action = action_for(event.outcome, execution.status)
    if action is _A.CONFIRM and amount_mismatch(event, execution) is not None:
        return _A.RECORD_AMOUNT_MISMATCH
    return action


class WebhookSecrets(Protocol):
    """Where the currently valid signing secrets of a provider come from (WebhookSecretStore in AWS)."""

    def secrets_for(self, provider: str) -> Sequence[str]: ...


def verified_events(
    raw: RawWebhook, registry: Mapping[str, WebhookProvider], secrets: WebhookSecrets
) -> list[WebhookEvent]:
    """The delivery's events, parsed only after its signature verified; touches no database.

    Raises UnknownWebhookProvider before any secret is read, SignatureInvalid before anything is parsed and
    WebhookPayloadInvalid for an authentic body of the wrong shape (then no event of the batch is processed).
    """
    provider = provider_for(raw.provider, registry)
    return provider.verify_and_parse(raw, secrets.secrets_for(provider.name))


@dataclass(frozen=True, slots=True)
class EventResult:
    """One event's result; `duplicate` when an earlier delivery already processed it (the stored result).

    `amount_mismatch` says what differed when this delivery recorded an AMOUNT_MISMATCH (not on a redelivery).
    """

    provider: str
    event_id: str
    event_type: str
    result: WebhookResult
    duplicate: bool = False
    execution: ExecutionRef | None = None
    amount_mismatch: AmountMismatch | None = None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The results of one delivery, in the provider's order."""

    provider: str
    results: tuple[EventResult, ...]

    @property
    def retry_later(self) -> tuple[str, ...]:
        """Ids of the events the provider must redeliver (nothing of theirs was stored)."""
        return tuple(r.event_id for r in self.results if r.result is WebhookResult.RETRY_LATER)


class WebhookProcessor:
    """Applies verified webhook events on one connection (the container's), one transaction per event."""

    def __init__(self, conn: Connection, *, repository: ExecutionRepository | None = None) -> None:
        self._conn = conn
        self._inbox = WebhookInbox(conn)
        self._reversals = ReversalApplier(ReversalRepository(conn))
        self._mismatches = AmountMismatches(conn)
        self._repository = repository or ExecutionRepository(conn)

    def process(self, raw: RawWebhook, events: Sequence[WebhookEvent], *, correlation_id: str | None) -> DeliveryResult:
        """Apply each event of a verified delivery; each one commits (or is refused) on its own."""
        digest = hashlib.sha256(raw.body).hexdigest()
        return DeliveryResult(
            raw.provider,
            tuple(self._process_event(event, raw, digest, correlation_id) for event in events),
        )

    def _process_event(
        self, event: WebhookEvent, raw: RawWebhook, digest: str, correlation_id: str | None
    ) -> EventResult:
        try:
            with self._conn.transaction() as transaction:
                # A redelivery waits on the inbox row of a delivery in flight: boundedly, then 409 and retry.
                apply_timeouts(self._conn)
                if not self._inbox.claim(event, payload_sha256=digest, received_at=raw.received_at):
                    return self._redelivered(event)
                result, execution = self._resolve(event, raw, correlation_id)
                if result is WebhookResult.RETRY_LATER:
                    # The claim goes too: the event stays unseen, so the provider's redelivery is processed afresh.
                    raise psycopg.Rollback(transaction)
                self._inbox.resolve(event, result.value, execution)
        except psycopg.errors.LockNotAvailable:
            # The execution stayed locked beyond lock_timeout, typically by a reconciliation batch that is asking the
            # provider about it. Everything was rolled back; the redelivery will find the row settled or free.
            result, execution = WebhookResult.RETRY_LATER, None
        mismatch = (
            amount_mismatch(event, execution)
            if result is WebhookResult.AMOUNT_MISMATCH and execution is not None
            else None
        )
        return EventResult(
            event.provider, event.event_id, event.event_type, result, execution=execution, amount_mismatch=mismatch
        )

    def _redelivered(self, event: WebhookEvent) -> EventResult:
        # The claim waited for the earlier delivery's transaction, so its row is committed and resolved.
        stored = self._inbox.stored(event.provider, event.event_id)
        assert stored is not None, "a claim conflicts only with a committed row"
        execution = (
            ExecutionRef(stored.tenant_id, stored.execution_id, stored.execution_status)
            if stored.tenant_id and stored.execution_id and stored.execution_status
            else None
        )
        return EventResult(
            event.provider, event.event_id, stored.event_type, WebhookResult(stored.result), True, execution
        )

    def _resolve(
        self, event: WebhookEvent, raw: RawWebhook, correlation_id: str | None
    ) -> tuple[WebhookResult, ExecutionRef | None]:
        if event.outcome is WebhookOutcome.IGNORED:
            return WebhookResult.IGNORED, None
        # Parsers insist on a reference for acting events; without one there is nothing it could be applied to.
        if event.provider_reference is None:
            return WebhookResult.ORPHAN, None
        matches = self._inbox.executions_with_reference(event.provider, event.provider_reference)
        if not matches:
            return WebhookResult.ORPHAN, None
        if len(matches) > 1:
            return WebhookResult.AMBIGUOUS, None
        return self._apply(event, matches[0], raw, correlation_id)

    def _apply(
        self, event: WebhookEvent, execution: ExecutionRef, raw: RawWebhook, correlation_id: str | None
    ) -> tuple[WebhookResult, ExecutionRef]:
        for _ in range(_DECISIONS_PER_EVENT):
            action = decide(event, execution)
            try:
                return self._perform(action, event, execution, raw, correlation_id)
            except TransitionConflict as lost:
                # Another writer (reconciliation, another event) moved the execution first; nothing was written
                # here. Decide again from where it is now: typically already_terminal or out_of_order.
                execution = replace(execution, status=ExecutionStatus(lost.actual))
        return WebhookResult.RETRY_LATER, execution

    def _perform(
        self,
        action: WebhookAction,
        event: WebhookEvent,
        execution: ExecutionRef,
        raw: RawWebhook,
        correlation_id: str | None,
    ) -> tuple[WebhookResult, ExecutionRef]:
        context = WorkflowWriteContext.webhook(event.provider)
        # Lands in the lifecycle event, so the timeline says which delivery made the transition.
        metadata = {"provider_event_id": event.event_id, "provider_event_type": event.event_type}
        match action:
            case _A.CONFIRM:
                done = self._repository.confirm_from_pending(
                    execution.tenant_id,
                    execution.execution_id,
                    context,
                    correlation_id=correlation_id,
                    metadata=metadata,
                )
                return WebhookResult.APPLIED, replace(execution, status=done.status)
            case _A.REJECT:
                done = self._repository.reject_from_pending(
                    execution.tenant_id,
                    execution.execution_id,
                    context,
                    error_code=event.failure_code or UNSPECIFIED_FAILURE_CODE,
                    correlation_id=correlation_id,
                    metadata=metadata,
                )
                return WebhookResult.APPLIED, replace(execution, status=done.status)
            case _A.RECORD_REVERSAL:
                self._reversals.apply(
                    execution,
                    event,
                    occurred_at=event.occurred_at or raw.received_at,
                    context=context,
                    correlation_id=correlation_id,
                )
                return WebhookResult.REVERSAL, execution
            case _A.FLAG_PAID_AFTER_FAILURE:
                annotate(
                    self._conn,
                    execution.tenant_id,
                    execution.execution_id,
                    PAID_AFTER_FAILURE_EVENT_TYPE,
                    {**metadata, "reported_amount": event.amount, "reported_currency": event.currency},
                    context=context,
                    correlation_id=correlation_id,
                )
                return WebhookResult.OUT_OF_ORDER, execution
            case _A.RECORD_AMOUNT_MISMATCH:
                mismatch = amount_mismatch(event, execution)
                assert mismatch is not None, "decide() chose this action for this event and execution"
                # Locks the row, changes nothing: the execution stays as it is (pending, unless another writer
                # settled it since the lookup) and the provider's redelivery gets this result back.
                standing = self._mismatches.record(
                    execution,
                    event,
                    expected=mismatch.expected,
                    received=mismatch.received,
                    context=context,
                    correlation_id=correlation_id,
                )
                return WebhookResult.AMOUNT_MISMATCH, replace(execution, status=standing.status)
            case _A.ACKNOWLEDGE | _A.RECORD_OUT_OF_ORDER | _A.RETRY_LATER:
                return _RESULT_WITHOUT_WRITE[action], execution
            case _:
                assert_never(action)
