"""The cross-tenant workers run as billing_worker, the role production gives them, where row-level security applies.

Only a system scope lets that role see every tenant, so a worker that forgot to open one would find nothing to do
here. What the workers act on is written as production writes it: by billing_app, through the repository.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import psycopg
import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.outbox.events import OutboundEvent, PublishResult
from billing.outbox.relay import OutboxRelay
from billing.rails.adapters import adapter_for
from billing.rails.sandbox import SandboxProvider, connections_to
from billing.services.reconciliation import ReconcileConfig, ReconciliationWorker
from billing.services.webhook_processing import WebhookProcessor
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from tests.factories import create_execution
from tests.unit.webhooks.factories import raw

CTX = WorkflowWriteContext.service_default()


def _awaiting_settlement(app_db: Connection, provider: SandboxProvider) -> tuple[Execution, str]:
    """A SEPA debit the execute function (billing_app) submitted to the sandbox for a fresh tenant."""
    tenant = uuid4()
    repository = ExecutionRepository(app_db)
    execution = create_execution(app_db, tenant, payment_rail="sepa_debit", payment_instrument_id="iban_settles_paid")
    repository.mark_pending(tenant, execution.id, CTX)
    processing = repository.mark_processing(tenant, execution.id, CTX)
    result = adapter_for(processing, {"sandbox": provider}).submit(processing)
    assert result.provider_reference is not None
    repository.settle_from_processing(tenant, execution.id, CTX, provider_reference=result.provider_reference)
    return execution, result.provider_reference


def _reconciler(db: Connection, provider: SandboxProvider) -> ReconciliationWorker:
    return ReconciliationWorker(
        db,
        {"sandbox": provider},
        config=ReconcileConfig(pending_after=timedelta(0)),
        clock=lambda: datetime.now(UTC) + timedelta(seconds=1),
    )


class AcceptAll:
    def __init__(self) -> None:
        self.published: list[OutboundEvent] = []

    def publish(self, events: Sequence[OutboundEvent]) -> list[PublishResult]:
        self.published.extend(events)
        return [PublishResult(accepted=True) for _ in events]


def test_outbox_relay_as_worker_role_publishes_every_tenants_rows(
    db: Connection, app_db: Connection, private_admin: Connection
) -> None:
    for _ in range(3):
        create_execution(app_db, uuid4())
    bus = AcceptAll()

    report = OutboxRelay(db, bus).run(lambda: 60_000.0)

    assert report.published == 3
    assert len({event.ordering_key for event in bus.published}) == 3
    rows = private_admin.execute("select published_at, lease_owner from billing.billing_outbox").fetchall()
    assert all(row["published_at"] is not None and row["lease_owner"] is None for row in rows)


def test_reconciliation_as_worker_role_settles_pending_debits(
    db: Connection, app_db: Connection, private_db_url: str, private_admin: Connection
) -> None:
    provider = SandboxProvider(connections_to(private_db_url))
    execution, _ = _awaiting_settlement(app_db, provider)

    report = _reconciler(db, provider).run(lambda: 60_000.0)

    assert report.summary()["changed"] == 1
    settled = ExecutionRepository(app_db).get(execution.tenant_id, execution.id)
    assert settled is not None
    assert settled.status is ExecutionStatus.COMPLETED
    lease = private_admin.execute(
        "select lease_owner, next_check_at, last_outcome from billing.reconciliation_leases where execution_id = %s",
        [execution.id],
    ).fetchone()
    assert lease == {"lease_owner": None, "next_check_at": None, "last_outcome": "completed"}


def test_reconciliation_leases_are_tenant_rows_only_the_worker_role_may_touch(
    db: Connection, app_db: Connection, private_db_url: str
) -> None:
    provider = SandboxProvider(connections_to(private_db_url))
    execution, _ = _awaiting_settlement(app_db, provider)
    _reconciler(db, provider).run(lambda: 60_000.0)
    count = "select count(*) as n from billing.reconciliation_leases"

    with tenant_transaction(db, uuid4()):
        other_tenant = db.execute(count).fetchone()
    with tenant_transaction(db, execution.tenant_id):
        own_tenant = db.execute(count).fetchone()
    with system_transaction(db):
        every_tenant = db.execute(count).fetchone()
    with pytest.raises(psycopg.errors.InsufficientPrivilege), system_transaction(db):
        db.execute("delete from billing.reconciliation_leases")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(app_db, execution.tenant_id):
        app_db.execute(count)

    assert (other_tenant, own_tenant, every_tenant) == ({"n": 0}, {"n": 1}, {"n": 1})


def test_webhook_lookup_as_app_role_finds_the_execution(app_db: Connection, private_db_url: str) -> None:
    provider = SandboxProvider(connections_to(private_db_url))
    execution, reference = _awaiting_settlement(app_db, provider)
    event = WebhookEvent(
        provider="sandbox",
        event_id=f"evt_{uuid4().hex}",
        event_type="payment.succeeded",
        provider_reference=reference,
        outcome=WebhookOutcome.SUCCEEDED,
        failure_code=None,
        occurred_at=None,
    )
    delivery = WebhookProcessor(app_db).process(raw("sandbox", b"{}"), [event], correlation_id="rls-test")
    assert [r.result.value for r in delivery.results] == ["applied"]
    confirmed = ExecutionRepository(app_db).get(execution.tenant_id, execution.id)
    assert confirmed is not None
    assert confirmed.status is ExecutionStatus.COMPLETED
