"""PostgreSQL side of webhook processing: the inbox (claim, resolve, read back), the cross-tenant lookup by provider
reference, reversals of completed executions, and confirmations of another amount held back for an operator.

Every method runs inside the caller's open transaction (see billing.services.webhook_processing): the claim, the
effect and the resolution of one provider event commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from billing.db.attempts import annotate
from billing.db.connection import Connection
from billing.domain.execution import Execution
from billing.domain.money import Money
from billing.domain.status import ExecutionStatus
from billing.domain.transitions import EVENT_PREFIX
from billing.domain.workflow import WorkflowWriteContext
from billing.webhooks.events import WebhookEvent

# Annotation of a pending execution whose provider reported a success of another amount or currency: the
# execution stays as it was, the event says what was expected and what was received.
AMOUNT_MISMATCH_EVENT_TYPE = EVENT_PREFIX + "amount_mismatch"

# The claim: the primary key decides which of several concurrent deliveries of one event goes ahead. A loser's
# insert waits for the winner's transaction and then inserts nothing (or, if the winner rolled back, claims it).
_CLAIM = """
insert into billing_inbox.webhook_events (
    provider, provider_event_id, event_type, outcome, provider_reference, failure_code, occurred_at,
    payload_sha256, received_at, amount, currency
) values (
    %(provider)s, %(provider_event_id)s, %(event_type)s, %(outcome)s, %(provider_reference)s, %(failure_code)s,
    %(occurred_at)s, %(payload_sha256)s, %(received_at)s, %(amount)s, %(currency)s
)
on conflict (provider, provider_event_id) do nothing
returning provider_event_id
"""

_RESOLVE = """
update billing_inbox.webhook_events
   set result = %(result)s, tenant_id = %(tenant_id)s, execution_id = %(execution_id)s,
       execution_status = %(execution_status)s, processed_at = now()
 where provider = %(provider)s and provider_event_id = %(provider_event_id)s and result is null
"""

_SELECT = "select * from billing_inbox.webhook_events where provider = %s and provider_event_id = %s"

# Cross-tenant by design (the provider does not know our tenants): a SECURITY DEFINER function answers who owns
# the reference (sql/20261201_billing_least_privilege.sql), so the app role needs no scope that sees other tenants'
# rows. Two rows are enough to tell "unique" from "ambiguous".
_BY_REFERENCE = "select tenant_id, id, status, amount, currency from billing.executions_with_provider_reference(%s, %s)"


@dataclass(frozen=True, slots=True)
class ExecutionRef:
    """Which execution a provider reference belongs to, its status when looked up, and what it charges.

    `amount` and `currency` come with every lookup (they never change: BE003); a ref rebuilt from a stored inbox
    row, for a redelivery, has neither.
    """

    tenant_id: UUID
    execution_id: UUID
    status: ExecutionStatus
    amount: int | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """A resolved inbox row: what an earlier delivery of the event did."""

    provider: str
    provider_event_id: str
    event_type: str
    result: str
    tenant_id: UUID | None
    execution_id: UUID | None
    execution_status: ExecutionStatus | None


def _record_from_row(row: Mapping[str, Any]) -> InboxRecord:
    status = row["execution_status"]
    return InboxRecord(
        provider=row["provider"],
        provider_event_id=row["provider_event_id"],
        event_type=row["event_type"],
        result=row["result"],
        tenant_id=row["tenant_id"],
        execution_id=row["execution_id"],
        execution_status=ExecutionStatus(status) if status else None,
    )


class WebhookInbox:
    """The inbox and the lookups webhook processing needs, on the caller's connection and open transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def claim(self, event: WebhookEvent, *, payload_sha256: str, received_at: datetime) -> bool:
        """Insert the event's unresolved row; False if the event was already processed (a redelivery)."""
        params = {
            "provider": event.provider,
            "provider_event_id": event.event_id,
            "event_type": event.event_type,
            "outcome": event.outcome.value,
            "provider_reference": event.provider_reference,
            "failure_code": event.failure_code,
            "occurred_at": event.occurred_at,
            "payload_sha256": payload_sha256,
            "received_at": received_at,
            "amount": event.amount,
            "currency": event.currency,
        }
        return self._conn.execute(_CLAIM, params).fetchone() is not None

    def resolve(self, event: WebhookEvent, result: str, execution: ExecutionRef | None) -> None:
        """Record what the claimed event did; must run in the transaction that claimed it."""
        params = {
            "provider": event.provider,
            "provider_event_id": event.event_id,
            "result": result,
            "tenant_id": execution.tenant_id if execution else None,
            "execution_id": execution.execution_id if execution else None,
            "execution_status": execution.status.value if execution else None,
        }
        if self._conn.execute(_RESOLVE, params).rowcount != 1:
            raise RuntimeError(f"webhook event {event.provider}:{event.event_id} was not claimed by this transaction")

    def stored(self, provider: str, provider_event_id: str) -> InboxRecord | None:
        """The committed row of an event processed earlier, if any."""
        row = self._conn.execute(_SELECT, [provider, provider_event_id]).fetchone()
        return _record_from_row(row) if row else None

    def executions_with_reference(self, provider: str, provider_reference: str) -> list[ExecutionRef]:
        """Executions of any tenant carrying this provider reference (at most two: one, or proof of ambiguity)."""
        rows = self._conn.execute(_BY_REFERENCE, [provider, provider_reference]).fetchall()
        return [
            ExecutionRef(row["tenant_id"], row["id"], ExecutionStatus(row["status"]), row["amount"], row["currency"])
            for row in rows
        ]


def _provider_event(event: WebhookEvent) -> dict[str, str]:
    """Which provider event a record on an execution came from, as its lifecycle event's metadata names it."""
    return {"provider": event.provider, "provider_event_id": event.event_id, "provider_event_type": event.event_type}


class AmountMismatches:
    """Records that a provider reported another amount or currency than its execution's (the row never changes)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(
        self,
        execution: ExecutionRef,
        event: WebhookEvent,
        *,
        expected: Money,
        received: Money,
        context: WorkflowWriteContext,
        correlation_id: str | None,
    ) -> Execution:
        """Write the amount_mismatch event and its outbox row; the execution as it stands, locked until commit."""
        # Flat keys, so an operator's query reads metadata ->> 'received_amount' without unpacking.
        metadata = {
            **_provider_event(event),
            "expected_amount": expected.amount,
            "expected_currency": expected.currency,
            "received_amount": received.amount,
            "received_currency": received.currency,
        }
        written = annotate(
            self._conn,
            execution.tenant_id,
            execution.execution_id,
            AMOUNT_MISMATCH_EVENT_TYPE,
            metadata,
            context=context,
            correlation_id=correlation_id,
        )
        if written is None:
            # Executions are never deleted (BE004), and this one was just looked up.
            raise RuntimeError(f"execution {execution.execution_id} vanished while its webhook was processed")
        return written
