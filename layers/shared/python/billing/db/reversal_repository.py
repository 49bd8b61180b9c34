"""PostgreSQL side of reversals: refunds the engine requests, reversals providers report, and their status changes.

Every write is one statement that locks the (unchanged, completed) execution, writes or moves the reversal row, and
records its lifecycle event (kind 'reversal') and outbox row beside it, as every execution write does
(sql/20261213_billing_refunds.sql checks that at commit). The amount cap is the database's: a refund past what is
left to refund is refused by the insert itself (BE017 -> RefundExceedsCaptured), under an advisory lock per
execution, so concurrent requests cannot both slip under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid4

from psycopg.types.json import Jsonb

from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.errors import RefundExceedsCaptured
from billing.domain.money import Money
from billing.domain.reversals import (
    REFUND_FAILED_EVENT_TYPE,
    REFUND_KINDS,
    REFUND_PENDING_EVENT_TYPE,
    REFUND_REQUESTED_EVENT_TYPE,
    REFUNDED_EVENT_TYPE,
    REVERSED_EVENT_TYPE,
    ReversalInitiator,
    ReversalKind,
    ReversalStatus,
)
from billing.domain.workflow import WorkflowWriteContext


@dataclass(frozen=True, slots=True)
class Reversal:
    """An execution_reversals row."""

    tenant_id: UUID
    id: UUID
    execution_id: UUID
    provider: str
    kind: ReversalKind
    money: Money | None
    status: ReversalStatus
    initiated_by: ReversalInitiator
    provider_reference: str | None
    idempotency_key: str | None
    request_fingerprint: str | None
    reason: str | None
    failure_code: str | None
    provider_event_id: str | None
    provider_event_type: str | None
    occurred_at: datetime
    recorded_at: datetime
    updated_at: datetime | None
    check_attempts: int


def reversal_from_row(row: dict[str, Any]) -> Reversal:
    money = Money(row["amount"], row["currency"]) if row["amount"] is not None else None
    return Reversal(
        tenant_id=row["tenant_id"],
        id=row["id"],
        execution_id=row["execution_id"],
        provider=row["provider"],
        kind=ReversalKind(row["kind"]),
        money=money,
        status=ReversalStatus(row["status"]),
        initiated_by=ReversalInitiator(row["initiated_by"]),
        provider_reference=row["provider_reference"],
        idempotency_key=row["idempotency_key"],
        request_fingerprint=row["request_fingerprint"],
        reason=row["reason"],
        failure_code=row["failure_code"],
        provider_event_id=row["provider_event_id"],
        provider_event_type=row["provider_event_type"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        updated_at=row["updated_at"],
        check_attempts=row["check_attempts"],
    )


# The event and outbox row of a reversal statement whose CTE `reversal` returned the row it wrote: the event's
# metadata names the row and the status it was written with (the commit-time check compares both).
_COMPANIONS = """
, event as (
    insert into billing.billing_execution_events (
        tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
    )
    select r.tenant_id, %(event_id)s, r.execution_id, %(event_type)s, e.status, e.status,
           %(event_metadata)s || billing_reversal_metadata.m, %(actor)s, %(correlation_id)s, clock_timestamp()
      from reversal r
      join execution e on e.tenant_id = r.tenant_id and e.id = r.execution_id
      cross join lateral (select jsonb_build_object(
          'reversal_id', r.id, 'reversal_status', r.status, 'kind', r.kind, 'amount', r.amount,
          'currency', r.currency, 'provider_reference', r.provider_reference, 'initiated_by', r.initiated_by
      ) as m) billing_reversal_metadata
    returning *
), outbox as (
    insert into billing.billing_outbox (
        tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at
    )
    select ev.tenant_id, ev.id, ev.execution_id, ev.type,
           billing.execution_event_payload(e, ev.id, ev.type, e.status, %(correlation_id)s, ev.occurred_at)
           || jsonb_build_object('reversal', ev.metadata || jsonb_build_object('occurred_at', r.occurred_at)),
           %(correlation_id)s, ev.occurred_at
      from event ev
      join reversal r on r.id = (ev.metadata ->> 'reversal_id')::uuid
      join execution e on e.tenant_id = ev.tenant_id and e.id = ev.execution_id
)
select * from reversal
"""

# Lock the execution like every other write does before taking an outbox id, so the execution's outbox rows
# commit in id order (the relay's ordering rule). Reversals exist for completed executions only.
_EXECUTION = """
with execution as (
    select e.* from billing.billing_executions e
     where e.tenant_id = %(tenant_id)s and e.id = %(execution_id)s and e.status = 'completed'
       for update of e
)
"""

_REQUEST_REFUND = (
    _EXECUTION
    + """
, reversal as (
    insert into billing.execution_reversals (
        tenant_id, id, execution_id, provider, kind, amount, currency, status, initiated_by, idempotency_key,
        request_fingerprint, requested_by, reason, occurred_at, next_check_at
    )
    select e.tenant_id, %(reversal_id)s, e.id, e.payment_provider, 'refund', %(amount)s, %(currency)s, 'requested',
           'merchant', %(idempotency_key)s, %(request_fingerprint)s, %(actor)s, %(reason)s, clock_timestamp(),
           clock_timestamp() + %(first_check_after)s
      from execution e
    on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing
    returning *
)
"""
    + _COMPANIONS
)

_RECORD_PROVIDER_REVERSAL = (
    _EXECUTION
    + """
, reversal as (
    insert into billing.execution_reversals (
        tenant_id, id, execution_id, provider, provider_event_id, provider_event_type, kind, amount, currency,
        status, initiated_by, provider_reference, reason, failure_code, occurred_at, next_check_at
    )
    select e.tenant_id, %(reversal_id)s, e.id, %(provider)s, %(provider_event_id)s, %(provider_event_type)s,
           %(kind)s, %(amount)s, %(currency)s, %(status)s, 'provider', %(provider_reference)s, %(reason)s,
           %(failure_code)s, %(occurred_at)s, case when %(follow)s then clock_timestamp() end
      from execution e
    on conflict do nothing
    returning *
)
"""
    + _COMPANIONS
)

# Moves a reversal that is not final yet; guarded by the statuses the caller saw, so of two writers racing
# (a webhook and reconciliation) exactly one moves it and writes the event.
_MOVE = (
    _EXECUTION
    + """
, reversal as (
    update billing.execution_reversals r
       set status = %(status)s, provider_reference = coalesce(r.provider_reference, %(provider_reference)s),
           failure_code = %(failure_code)s, next_check_at = %(next_check_at)s
      from execution e
     where r.tenant_id = e.tenant_id and r.execution_id = e.id and r.id = %(reversal_id)s
       and r.status = any(%(from_statuses)s)
    returning r.*
)
"""
    + _COMPANIONS
)

# Bookkeeping of a refund whose provider gave no answer: when to look again. Not a status change, so no event.
_POSTPONE = """
update billing.execution_reversals
   set next_check_at = %(next_check_at)s
 where tenant_id = %(tenant_id)s and id = %(reversal_id)s and status in ('requested', 'pending')
returning *
"""

_BY_ID = "select * from billing.execution_reversals where tenant_id = %s and id = %s"
_BY_KEY = "select * from billing.execution_reversals where tenant_id = %s and idempotency_key = %s"
_BY_PROVIDER_REFERENCE = """
select * from billing.execution_reversals
 where tenant_id = %s and provider = %s and provider_reference = %s and kind = any(%s)
"""
_OF_EXECUTION = """
select * from billing.execution_reversals where tenant_id = %s and execution_id = %s order by recorded_at, id
"""
_REFUNDABLE = "select billing.execution_refundable_amount(%s, %s) as refundable"

# Reconciliation's claim: refunds due for a look, leased by pushing next_check_at past the lease so that a second
# worker skips them; committed before any provider is asked.
_CLAIM_DUE = """
with due as (
    select r.tenant_id, r.id from billing.execution_reversals r
     where r.status in ('requested', 'pending') and r.next_check_at <= clock_timestamp()
     order by r.next_check_at
     limit %(limit)s
       for update skip locked
)
update billing.execution_reversals r
   set next_check_at = clock_timestamp() + %(lease)s, check_attempts = r.check_attempts + 1
  from due
 where r.tenant_id = due.tenant_id and r.id = due.id
returning r.*
"""

EVENT_FOR_STATUS: Final = {
    ReversalStatus.REQUESTED: REFUND_REQUESTED_EVENT_TYPE,
    ReversalStatus.PENDING: REFUND_PENDING_EVENT_TYPE,
    ReversalStatus.SUCCEEDED: REFUNDED_EVENT_TYPE,
    ReversalStatus.FAILED: REFUND_FAILED_EVENT_TYPE,
}

# Statuses a move may leave from, per target: forward only (the trigger enforces the same).
_FROM_STATUSES: Final = {
    ReversalStatus.PENDING: [ReversalStatus.REQUESTED.value],
    ReversalStatus.SUCCEEDED: [ReversalStatus.REQUESTED.value, ReversalStatus.PENDING.value],
    ReversalStatus.FAILED: [ReversalStatus.REQUESTED.value, ReversalStatus.PENDING.value],
}


@dataclass(frozen=True, slots=True)
class RefundRequest:
    tenant_id: UUID
    execution_id: UUID
    money: Money
    idempotency_key: str
    request_fingerprint: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class ProviderReversal:
    """A reversal a provider event reports that matches no row of ours: recorded as the provider states it."""

    tenant_id: UUID
    execution_id: UUID
    provider: str
    provider_event_id: str
    provider_event_type: str
    kind: ReversalKind
    money: Money
    status: ReversalStatus
    provider_reference: str | None
    reason: str | None
    occurred_at: datetime


class ReversalRepository:
    """Reversal reads and writes on one connection; each write is its own tenant-scoped transaction unless the
    caller already opened one (webhook processing composes it with the inbox claim)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def request_refund(
        self,
        request: RefundRequest,
        *,
        first_check_after: timedelta,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> tuple[Reversal | None, bool]:
        """Insert a requested refund under its key; (row, True) when written, (the key's earlier row, False) when the
        key was used before, (None, False) when the execution is not completed. RefundExceedsCaptured when the
        database refuses the amount: then nothing was written."""
        params = {
            "tenant_id": request.tenant_id,
            "execution_id": request.execution_id,
            "reversal_id": uuid4(),
            "amount": request.money.amount,
            "currency": request.money.currency,
            "idempotency_key": request.idempotency_key,
            "request_fingerprint": request.request_fingerprint,
            "reason": request.reason,
            "first_check_after": first_check_after,
            **self._companion_params(REFUND_REQUESTED_EVENT_TYPE, {}, context, correlation_id),
        }
        # The key is looked up first: the cap's trigger runs before the insert's conflict check, so a replay of a
        # refund that used up the amount would otherwise be refused as an over-refund.
        earlier = self.by_idempotency_key(request.tenant_id, request.idempotency_key)
        if earlier is not None:
            return earlier, False
        try:
            with translated_guard_errors(), tenant_transaction(self._conn, request.tenant_id):
                row = self._conn.execute(_REQUEST_REFUND, params).fetchone()
        except RefundExceedsCaptured:
            # A concurrent request with the same key may have taken the amount first: then this is its replay.
            concurrent = self.by_idempotency_key(request.tenant_id, request.idempotency_key)
            if concurrent is None:
                raise
            return concurrent, False
        if row is not None:
            return reversal_from_row(row), True
        # No row: the execution is not completed, or the same key's insert committed in between.
        return self.by_idempotency_key(request.tenant_id, request.idempotency_key), False

    def by_idempotency_key(self, tenant_id: UUID, idempotency_key: str) -> Reversal | None:
        with tenant_transaction(self._conn, tenant_id):
            row = self._conn.execute(_BY_KEY, [tenant_id, idempotency_key]).fetchone()
        return reversal_from_row(row) if row else None

    def record_provider_reversal(
        self,
        reversal: ProviderReversal,
        *,
        context: WorkflowWriteContext,
        correlation_id: str | None,
        metadata: dict[str, Any],
    ) -> Reversal | None:
        """Record a reversal the provider reports; None if this provider event (or reference) already recorded one,
        or the execution is not completed."""
        event_type = REVERSED_EVENT_TYPE
        params = {
            "tenant_id": reversal.tenant_id,
            "execution_id": reversal.execution_id,
            "reversal_id": uuid4(),
            "provider": reversal.provider,
            "provider_event_id": reversal.provider_event_id,
            "provider_event_type": reversal.provider_event_type,
            "kind": reversal.kind.value,
            "amount": reversal.money.amount,
            "currency": reversal.money.currency,
            "status": reversal.status.value,
            "provider_reference": reversal.provider_reference,
            "reason": reversal.reason,
            "failure_code": reversal.reason if reversal.status is ReversalStatus.FAILED else None,
            "occurred_at": reversal.occurred_at,
            # A refund made at the provider that is still pending there is followed like ours.
            "follow": reversal.status is ReversalStatus.PENDING,
            **self._companion_params(event_type, {**metadata, "reason": reversal.reason}, context, correlation_id),
        }
        with tenant_transaction(self._conn, reversal.tenant_id):
            row = self._conn.execute(_RECORD_PROVIDER_REVERSAL, params).fetchone()
        return reversal_from_row(row) if row else None

    def move(
        self,
        current: Reversal,
        status: ReversalStatus,
        *,
        provider_reference: str | None = None,
        failure_code: str | None = None,
        next_check_at: datetime | None = None,
        context: WorkflowWriteContext,
        correlation_id: str | None,
        metadata: dict[str, Any] | None = None,
    ) -> Reversal | None:
        """Move a reversal forward to `status` with its event; None if another writer moved it first."""
        params = {
            "tenant_id": current.tenant_id,
            "execution_id": current.execution_id,
            "reversal_id": current.id,
            "status": status.value,
            "provider_reference": provider_reference,
            "failure_code": failure_code if status is ReversalStatus.FAILED else None,
            "next_check_at": next_check_at if status is ReversalStatus.PENDING else None,
            "from_statuses": _FROM_STATUSES[status],
            **self._companion_params(EVENT_FOR_STATUS[status], metadata or {}, context, correlation_id),
        }
        with translated_guard_errors(), tenant_transaction(self._conn, current.tenant_id):
            row = self._conn.execute(_MOVE, params).fetchone()
        return reversal_from_row(row) if row else None

    def postpone(self, current: Reversal, next_check_at: datetime) -> None:
        """Look at a refund again later (its provider gave no usable answer); no status change, no event."""
        params = {"tenant_id": current.tenant_id, "reversal_id": current.id, "next_check_at": next_check_at}
        with tenant_transaction(self._conn, current.tenant_id):
            self._conn.execute(_POSTPONE, params)

    def get(self, tenant_id: UUID, reversal_id: UUID) -> Reversal | None:
        with tenant_transaction(self._conn, tenant_id):
            row = self._conn.execute(_BY_ID, [tenant_id, reversal_id]).fetchone()
        return reversal_from_row(row) if row else None

    def by_provider_reference(
        self, tenant_id: UUID, provider: str, reference: str, kinds: frozenset[ReversalKind]
    ) -> Reversal | None:
        """The reversal of one of `kinds` the provider knows by `reference` (a dispute's movements share one)."""
        with tenant_transaction(self._conn, tenant_id):
            params = [tenant_id, provider, reference, [k.value for k in kinds]]
            row = self._conn.execute(_BY_PROVIDER_REFERENCE, params).fetchone()
        return reversal_from_row(row) if row else None

    def of_execution(self, tenant_id: UUID, execution_id: UUID) -> list[Reversal]:
        with tenant_transaction(self._conn, tenant_id):
            rows = self._conn.execute(_OF_EXECUTION, [tenant_id, execution_id]).fetchall()
        return [reversal_from_row(row) for row in rows]

    def refundable(self, tenant_id: UUID, execution_id: UUID) -> int | None:
        """What a refund of the execution may still take, as the database computes its cap."""
        with tenant_transaction(self._conn, tenant_id):
            row = self._conn.execute(_REFUNDABLE, [tenant_id, execution_id]).fetchone()
        return row["refundable"] if row else None

    def claim_due(self, *, limit: int, lease: timedelta) -> list[Reversal]:
        """Refunds due for a look (any tenant: the worker's scope), leased to this caller; committed on return."""
        with system_transaction(self._conn):
            rows = self._conn.execute(_CLAIM_DUE, {"limit": limit, "lease": lease}).fetchall()
        return [reversal_from_row(row) for row in rows]

    @staticmethod
    def _companion_params(
        event_type: str, metadata: dict[str, Any], context: WorkflowWriteContext, correlation_id: str | None
    ) -> dict[str, Any]:
        return {
            "event_id": uuid4(),
            "event_type": event_type,
            "event_metadata": Jsonb(metadata),
            "actor": context.actor,
            "correlation_id": correlation_id,
        }


def refunded_amount(reversals: list[Reversal]) -> int:
    """What has gone back to the customer by refund: succeeded refunds, less refunds the issuer returned."""
    total = 0
    for reversal in reversals:
        if reversal.money is None or reversal.status is not ReversalStatus.SUCCEEDED:
            continue
        if reversal.kind in REFUND_KINDS:
            total += reversal.money.amount
        elif reversal.kind is ReversalKind.REFUND_REVERSED:
            total -= reversal.money.amount
    return total
