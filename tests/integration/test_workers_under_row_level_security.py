"""The cross-tenant workers run as an ordinary application role, where row-level security applies.

Superusers bypass row-level security, so the other worker tests would pass even if a worker forgot to open a
system scope; here such a worker would find nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
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

APP_ROLE = "billing_app_workers"
CTX = WorkflowWriteContext.service_default()


@pytest.fixture
def app_conn(private_db_url: str) -> Iterator[Connection]:
    """A connection acting as a non-superuser application role with the grants the functions have."""
    with connect(private_db_url) as admin:
        admin.execute(
            f"""
            do $$ begin create role {APP_ROLE} nologin; exception when duplicate_object then null; end $$;
            grant usage on schema billing, billing_inbox, sandbox_provider to {APP_ROLE};
            grant select, insert, update on all tables in schema billing, billing_inbox, sandbox_provider
                to {APP_ROLE};
            grant execute on all functions in schema billing to {APP_ROLE};
            """
        )
    with connect(private_db_url) as connection:
        connection.execute(f"set role {APP_ROLE}")
        yield connection


def _awaiting_settlement(conn: Connection, provider: SandboxProvider) -> tuple[Execution, str]:
    """A SEPA debit submitted to the sandbox for a fresh tenant, pending settlement."""
    tenant = uuid4()
    repository = ExecutionRepository(conn)
    execution = create_execution(conn, tenant, payment_rail="sepa_debit", payment_instrument_id="iban_settles_paid")
    repository.mark_pending(tenant, execution.id, CTX)
    processing = repository.mark_processing(tenant, execution.id, CTX)
    result = adapter_for(processing, {"sandbox": provider}).submit(processing)
    assert result.provider_reference is not None
    repository.settle_from_processing(tenant, execution.id, CTX, provider_reference=result.provider_reference)
    return execution, result.provider_reference


class AcceptAll:
    def __init__(self) -> None:
        self.published: list[OutboundEvent] = []

    def publish(self, events: Sequence[OutboundEvent]) -> list[PublishResult]:
        self.published.extend(events)
        return [PublishResult(accepted=True) for _ in events]


def test_outbox_relay_as_application_role_publishes_every_tenants_rows(app_conn: Connection) -> None:
    for _ in range(3):
        create_execution(app_conn, uuid4())
    bus = AcceptAll()
    report = OutboxRelay(app_conn, bus).run(lambda: 60_000.0)
    assert report.published == 3
    assert len({event.ordering_key for event in bus.published}) == 3


def test_reconciliation_as_application_role_settles_pending_debits(app_conn: Connection, private_db_url: str) -> None:
    provider = SandboxProvider(connections_to(private_db_url))
    execution, _ = _awaiting_settlement(app_conn, provider)
    worker = ReconciliationWorker(
        app_conn,
        {"sandbox": provider},
        config=ReconcileConfig(pending_after=timedelta(0)),
        clock=lambda: datetime.now(UTC) + timedelta(seconds=1),
    )
    report = worker.run(lambda: 60_000.0)
    assert report.summary()["changed"] == 1
    settled = ExecutionRepository(app_conn).get(execution.tenant_id, execution.id)
    assert settled is not None
    assert settled.status is ExecutionStatus.COMPLETED


def test_webhook_lookup_as_application_role_finds_the_execution(app_conn: Connection, private_db_url: str) -> None:
    provider = SandboxProvider(connections_to(private_db_url))
    execution, reference = _awaiting_settlement(app_conn, provider)
    event = WebhookEvent(
        provider="sandbox",
        event_id=f"evt_{uuid4().hex}",
        event_type="payment.succeeded",
        provider_reference=reference,
        outcome=WebhookOutcome.SUCCEEDED,
        failure_code=None,
        occurred_at=None,
    )
    delivery = WebhookProcessor(app_conn).process(raw("sandbox", b"{}"), [event], correlation_id="rls-test")
    assert [r.result.value for r in delivery.results] == ["applied"]
    confirmed = ExecutionRepository(app_conn).get(execution.tenant_id, execution.id)
    assert confirmed is not None
    assert confirmed.status is ExecutionStatus.COMPLETED
