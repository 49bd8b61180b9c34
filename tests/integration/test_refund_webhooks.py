"""Refunds and chargebacks reported by signed Stripe and Adyen webhooks, through the real webhook handler.

Each test charges through the repository as a provider would have (execution completed under the provider's
reference), then delivers what the provider sends: its refund moving on, a dispute opening, a success for an
execution that had already failed.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import RefundRequest, Reversal, ReversalRepository
from billing.domain.execution import Execution
from billing.domain.money import Money
from billing.domain.reversals import PAID_AFTER_FAILURE_EVENT_TYPE, ReversalKind, ReversalStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.services.refunds import refund_fingerprint
from billing.webhooks import stripe as stripe_webhooks
from billing.webhooks.secrets import DEV_WEBHOOK_SECRETS, seed_webhook_secrets
from tests.factories import execution_request
from tests.lambda_harness import api_event, call, load_handler, response_json
from tests.unit.webhooks.factories import adyen_item, adyen_notification

pytestmark = pytest.mark.integration
WEBHOOK_PATH = "/api/v1/billing/webhook"
STRIPE_SECRET = DEV_WEBHOOK_SECRETS["stripe"][0]
ADYEN_KEY = DEV_WEBHOOK_SECRETS["adyen"][0]
CTX = WorkflowWriteContext.service_default()


@pytest.fixture(scope="module")
def webhook(aws: dict[str, str]) -> ModuleType:
    seed_webhook_secrets(boto3.client("secretsmanager"), {"stripe": [STRIPE_SECRET], "adyen": [ADYEN_KEY]})
    return load_handler("webhook")


def charged(conn: Connection, tenant_id: UUID, provider: str, reference: str, *, fail: bool = False) -> Execution:
    """An execution the provider charged (or declined) under `reference`."""
    repository = ExecutionRepository(conn)
    execution, _ = repository.insert_idempotent(
        tenant_id, execution_request(payment_instrument_id="pm_card_visa"), idempotency_key=f"k-{uuid4()}",
        payment_provider=provider, correlation_id=None, context=CTX,
    )  # fmt: skip
    repository.mark_pending(tenant_id, execution.id, CTX)
    repository.mark_processing(tenant_id, execution.id, CTX)
    if fail:
        # A decline names the provider's charge too (Stripe's error carries the intent).
        return repository.mark_failed(
            tenant_id, execution.id, CTX, error_code="card_declined", provider_reference=reference
        )
    return repository.mark_completed(tenant_id, execution.id, CTX, provider_reference=reference)


def pending_refund(conn: Connection, execution: Execution, amount: int, reference: str | None) -> Reversal:
    """A refund the engine requested and the provider accepted as pending (under `reference`, if it gave one)."""
    money = Money(amount, execution.currency)
    request = RefundRequest(
        execution.tenant_id, execution.id, money, f"r-{uuid4()}", refund_fingerprint(execution.id, money, None), None
    )
    reversals = ReversalRepository(conn)
    refund, _ = reversals.request_refund(
        request, first_check_after=timedelta(minutes=5), context=CTX, correlation_id=None
    )
    assert refund is not None
    moved = reversals.move(
        refund, ReversalStatus.PENDING, provider_reference=reference, context=CTX, correlation_id=None
    )
    assert moved is not None
    return moved


def deliver(webhook: ModuleType, provider: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    event = api_event("POST", f"{WEBHOOK_PATH}/{provider}", tenant_id=None, body=body, headers=headers)
    event["resource"] = f"{WEBHOOK_PATH}/{{provider}}"
    event["pathParameters"] = {"provider": provider}
    return call(webhook, event)


def stripe_delivery(event_type: str, obj: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    now = int(time.time())
    body = json.dumps({"id": f"evt_{uuid4().hex}", "object": "event", "type": event_type, "created": now,
                       "data": {"object": obj}}).encode()  # fmt: skip
    return {"Stripe-Signature": stripe_webhooks.sign(body, STRIPE_SECRET, now)}, body


def results(response: dict[str, Any]) -> list[str]:
    assert response["statusCode"] == 200, response["body"]
    return [r["result"] for r in response_json(response)["results"]]


def test_stripe_refund_updated_finishes_our_pending_refund(
    webhook: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    execution = charged(conn, tenant_id, "stripe", f"pi_{uuid4().hex[:14]}")
    refund = pending_refund(conn, execution, 700, f"re_{uuid4().hex[:14]}")
    obj = {"id": refund.provider_reference, "object": "refund", "amount": 700, "currency": "eur",
           "status": "succeeded", "payment_intent": execution.provider_reference,
           "metadata": {"refund_id": str(refund.id)}}  # fmt: skip

    assert results(deliver(webhook, "stripe", *stripe_delivery("refund.updated", obj))) == ["reversal"]

    after = ReversalRepository(conn).get(tenant_id, refund.id)
    assert after is not None
    assert after.status is ReversalStatus.SUCCEEDED
    types = [e.type for e in ExecutionRepository(conn).events(tenant_id, execution.id)]
    assert types[-1] == "billing.execution.refunded"


def test_stripe_dispute_is_recorded_as_a_chargeback_with_its_amount(
    webhook: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    execution = charged(conn, tenant_id, "stripe", f"pi_{uuid4().hex[:14]}")
    dispute = {"id": f"dp_{uuid4().hex[:14]}", "object": "dispute", "amount": 1999, "currency": "eur",
               "reason": "fraudulent", "status": "needs_response", "payment_intent": execution.provider_reference,
               "charge": f"ch_{uuid4().hex[:14]}"}  # fmt: skip

    assert results(deliver(webhook, "stripe", *stripe_delivery("charge.dispute.created", dispute))) == ["reversal"]

    [chargeback] = ReversalRepository(conn).of_execution(tenant_id, execution.id)
    assert (chargeback.kind, chargeback.money, chargeback.reason) == (
        ReversalKind.CHARGEBACK, Money(1999, "EUR"), "fraudulent"
    )  # fmt: skip
    # Nothing is left to refund once the whole payment was charged back.
    assert ReversalRepository(conn).refundable(tenant_id, execution.id) == 0


def test_adyen_refund_notification_finds_our_refund_by_its_merchant_reference(
    webhook: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    payment = f"PSP{uuid4().int % 10**13:013d}"
    execution = charged(conn, tenant_id, "adyen", payment)
    # Adyen answers a refund request "received" with the modification's pspReference; this one's answer was lost.
    refund = pending_refund(conn, execution, 500, None)
    item = adyen_item(psp_reference=f"PSP{uuid4().int % 10**13:013d}", event_code="REFUND",
                      original_reference=payment, value=500, currency="EUR")  # fmt: skip
    item["merchantReference"] = str(refund.id)

    response = deliver(webhook, "adyen", {"Content-Type": "application/json"}, adyen_notification([item], ADYEN_KEY))

    # Adyen is answered "[accepted]", whatever the result; the inbox row keeps it.
    assert (response["statusCode"], response["body"]) == (200, "[accepted]")
    after = ReversalRepository(conn).get(tenant_id, refund.id)
    assert after is not None
    assert (after.status, after.provider_reference) == (ReversalStatus.SUCCEEDED, item["pspReference"])


def test_a_stripe_success_for_a_failed_execution_is_flagged_for_an_operator(
    webhook: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    reference = f"pi_{uuid4().hex[:14]}"
    execution = charged(conn, tenant_id, "stripe", reference, fail=True)
    intent = {"id": reference, "object": "payment_intent", "amount": 1999, "amount_received": 1999,
              "currency": "eur", "status": "succeeded"}  # fmt: skip
    assert results(deliver(webhook, "stripe", *stripe_delivery("payment_intent.succeeded", intent))) == ["out_of_order"]
    types = [e.type for e in ExecutionRepository(conn).events(tenant_id, execution.id)]
    assert types[-1] == PAID_AFTER_FAILURE_EVENT_TYPE
