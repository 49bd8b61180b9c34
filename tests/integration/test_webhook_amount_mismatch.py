"""A provider success of another amount or currency than the execution's, through the real webhook handler.

The handler runs as billing_app (the webhook function's role); what it wrote is read on the admin's inspection
connection. The execution is a SEPA debit of 1999 EUR pending settlement at the provider.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest

from billing.db.connection import Connection
from billing.db.webhook_inbox import AMOUNT_MISMATCH_EVENT_TYPE
from billing.webhooks import stripe
from billing.webhooks.delivery import FAILED, SUCCEEDED, signed_sandbox_delivery
from billing.webhooks.secrets import seed_webhook_secrets
from billing.webhooks.verification import utc_now
from tests.integration.test_webhook_api import (
    ADYEN_KEY,
    CURRENT_SECRET,
    awaiting_settlement,
    deliver,
    emitted_metrics,
    event_types,
    execution_row,
    history,
    inbox_row,
    results,
)
from tests.lambda_harness import load_handler
from tests.unit.webhooks.factories import adyen_item, adyen_notification, stripe_event

STRIPE_SECRET = "whsec_test_stripe_amounts"
# What every execution here charges (tests.factories.execution_request).
CHARGED = (1999, "EUR")
PROVIDERS = ["stripe", "adyen", "sandbox"]


@pytest.fixture(scope="module")
def webhook_secrets(aws: dict[str, str]) -> None:
    """The signing secrets of the providers that report amounts, in (moto) Secrets Manager."""
    seed_webhook_secrets(
        boto3.client("secretsmanager"),
        {"stripe": [STRIPE_SECRET], "adyen": [ADYEN_KEY], "sandbox": [CURRENT_SECRET]},
    )


@pytest.fixture(scope="module")
def webhook(webhook_secrets: None) -> ModuleType:
    """One warm container of the webhook function."""
    return load_handler("webhook")


@dataclass(frozen=True)
class Delivery:
    """One signed provider delivery reporting a success of `amount` `currency` for a payment reference."""

    provider: str
    event_id: str
    event_type: str
    headers: dict[str, str]
    body: bytes


def paid(provider: str, reference: str, amount: int, currency: str) -> Delivery:
    """A success for `reference` paying `amount` `currency`, signed and worded as `provider` sends it."""
    match provider:
        case "stripe":
            event_id = f"evt_{uuid4().hex}"
            # Stripe writes currencies in lower case; what was collected is amount_received.
            intent = {
                "id": reference,
                "object": "payment_intent",
                "amount": CHARGED[0],
                "amount_received": amount,
                "currency": currency.lower(),
            }
            body = stripe_event("payment_intent.succeeded", intent, event_id=event_id)
            headers = {stripe.SIGNATURE_HEADER: stripe.sign(body, STRIPE_SECRET, int(utc_now().timestamp()))}
            return Delivery(provider, event_id, "payment_intent.succeeded", headers, body)
        case "adyen":
            item = adyen_item(psp_reference=reference, value=amount, currency=currency)
            body = adyen_notification([item], hex_key=ADYEN_KEY)
            return Delivery(provider, f"{reference}:AUTHORISATION:true", "AUTHORISATION", {}, body)
        case "sandbox":
            event_id = f"evt_{uuid4().hex}"
            headers, body = signed_sandbox_delivery(
                event_id, SUCCEEDED, reference, secret=CURRENT_SECRET, amount=amount, currency=currency
            )
            return Delivery(provider, event_id, SUCCEEDED, headers, body)
        case _:
            raise AssertionError(f"no delivery builder for {provider}")


def send(webhook: ModuleType, delivery: Delivery) -> dict[str, Any]:
    response = deliver(webhook, delivery.provider, delivery.headers, delivery.body)
    assert response["statusCode"] == 200, response
    return response


def pending_at(conn: Connection, tenant_id: UUID, provider: str) -> tuple[UUID, str]:
    """A 1999 EUR execution pending settlement at `provider` under a fresh reference."""
    execution, reference = awaiting_settlement(conn, tenant_id, provider=provider)
    assert (execution.amount, execution.currency) == CHARGED
    return execution.id, reference


def mismatch_events(admin: Connection, tenant_id: UUID, execution_id: UUID) -> list[dict[str, Any]]:
    return admin.execute(
        "select * from billing.billing_execution_events where tenant_id = %s and execution_id = %s and type = %s",
        [tenant_id, execution_id, AMOUNT_MISMATCH_EVENT_TYPE],
    ).fetchall()


def outbox_rows(admin: Connection, tenant_id: UUID, event_id: UUID) -> list[dict[str, Any]]:
    return admin.execute(
        "select * from billing.billing_outbox where tenant_id = %s and event_id = %s", [tenant_id, event_id]
    ).fetchall()


def mismatch_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "billing.webhook.amount_mismatch"]


# --- held back ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "received"),
    [(p, money) for p in PROVIDERS for money in [(1000, "EUR"), (1999, "USD")]],
    ids=[f"{p}-{case}" for p in PROVIDERS for case in ["other_amount", "other_currency"]],
)
def test_success_of_another_amount_or_currency_leaves_execution_pending_recorded_and_flagged(
    webhook: ModuleType,
    conn: Connection,
    admin: Connection,
    tenant_id: UUID,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    provider: str,
    received: tuple[int, str],
) -> None:
    # Given a 1999 EUR execution pending at the provider
    execution_id, reference = pending_at(conn, tenant_id, provider)
    before = history(admin, tenant_id)
    execution_before = execution_row(admin, tenant_id, execution_id)
    delivery = paid(provider, reference, *received)
    caplog.set_level(logging.INFO)
    capsys.readouterr()

    # When the provider reports a success of another amount or currency
    response = send(webhook, delivery)

    # Then the execution is untouched: still pending, nothing about it changed
    assert execution_row(admin, tenant_id, execution_id) == execution_before
    assert "billing.execution.confirmed" not in event_types(admin, tenant_id, execution_id)
    if provider != "adyen":  # Adyen is answered "[accepted]", without results
        assert results(response) == [("amount_mismatch", False)]
    # ... the delivery is recorded, naming the execution and what was received
    row = inbox_row(admin, provider, delivery.event_id)
    assert row is not None
    assert (row["result"], row["tenant_id"], row["execution_id"], row["execution_status"]) == (
        "amount_mismatch",
        tenant_id,
        execution_id,
        "pending",
    )
    assert (row["amount"], row["currency"]) == received
    # ... exactly one amount_mismatch event, with exactly one outbox row, and nothing else
    [event] = mismatch_events(admin, tenant_id, execution_id)
    assert (event["old_status"], event["new_status"], event["user_id"]) == (
        "pending",
        "pending",
        f"provider:{provider}",
    )
    assert event["metadata"] == {
        "provider": provider,
        "provider_event_id": delivery.event_id,
        "provider_event_type": delivery.event_type,
        "expected_amount": CHARGED[0],
        "expected_currency": CHARGED[1],
        "received_amount": received[0],
        "received_currency": received[1],
    }
    [outbox] = outbox_rows(admin, tenant_id, event["id"])
    assert outbox["event_type"] == AMOUNT_MISMATCH_EVENT_TYPE
    assert (outbox["payload"]["old_status"], outbox["payload"]["new_status"]) == ("pending", "pending")
    assert (outbox["payload"]["amount"], outbox["payload"]["currency"]) == CHARGED
    assert history(admin, tenant_id) == {
        **before,
        "billing_execution_events": before["billing_execution_events"] + 1,
        "billing_outbox": before["billing_outbox"] + 1,
    }
    # ... and flagged: counted, and logged with both amounts for the operator
    assert emitted_metrics(capsys.readouterr().out).get("WebhookResult_amount_mismatch") == 1.0
    [logged] = mismatch_logs(caplog)
    assert (
        getattr(logged, "execution_id", None),
        getattr(logged, "expected_amount", None),
        getattr(logged, "received_amount", None),
        getattr(logged, "received_currency", None),
    ) == (str(execution_id), CHARGED[0], *received)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_redelivered_mismatch_gets_the_stored_result_and_writes_nothing_more(
    webhook: ModuleType,
    conn: Connection,
    admin: Connection,
    tenant_id: UUID,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    execution_id, reference = pending_at(conn, tenant_id, provider)
    delivery = paid(provider, reference, 1000, "EUR")
    send(webhook, delivery)
    after_first = history(admin, tenant_id)
    stored = inbox_row(admin, provider, delivery.event_id)
    caplog.set_level(logging.INFO)
    caplog.clear()
    capsys.readouterr()

    again = send(webhook, delivery)

    if provider != "adyen":
        assert results(again) == [("amount_mismatch", True)]
    assert history(admin, tenant_id) == after_first
    assert inbox_row(admin, provider, delivery.event_id) == stored
    assert len(mismatch_events(admin, tenant_id, execution_id)) == 1
    assert execution_row(admin, tenant_id, execution_id)["status"] == "pending"
    metrics = emitted_metrics(capsys.readouterr().out)
    assert (metrics.get("WebhookRedelivered"), metrics.get("WebhookResult_amount_mismatch")) == (1.0, None)
    assert mismatch_logs(caplog) == []


# --- applied as before --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_of_the_charged_amount_and_currency_completes_the_execution(
    webhook: ModuleType,
    conn: Connection,
    admin: Connection,
    tenant_id: UUID,
    caplog: pytest.LogCaptureFixture,
    provider: str,
) -> None:
    execution_id, reference = pending_at(conn, tenant_id, provider)
    delivery = paid(provider, reference, *CHARGED)
    caplog.set_level(logging.INFO)

    response = send(webhook, delivery)

    if provider != "adyen":
        assert results(response) == [("applied", False)]
    assert execution_row(admin, tenant_id, execution_id)["status"] == "completed"
    assert event_types(admin, tenant_id, execution_id)[-1] == "billing.execution.confirmed"
    assert mismatch_events(admin, tenant_id, execution_id) == []
    row = inbox_row(admin, provider, delivery.event_id)
    assert row is not None
    assert (row["result"], row["amount"], row["currency"]) == ("applied", *CHARGED)
    assert mismatch_logs(caplog) == []


def test_success_that_names_no_amount_completes_the_execution_and_stores_none(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # GoCardless never says; the sandbox need not: there is nothing to compare, so the confirmation applies.
    execution_id, reference = pending_at(conn, tenant_id, "sandbox")
    event_id = f"evt_{uuid4().hex}"
    headers, body = signed_sandbox_delivery(event_id, SUCCEEDED, reference, secret=CURRENT_SECRET)

    response = deliver(webhook, "sandbox", headers, body)

    assert results(response) == [("applied", False)]
    assert execution_row(admin, tenant_id, execution_id)["status"] == "completed"
    row = inbox_row(admin, "sandbox", event_id)
    assert row is not None
    assert (row["amount"], row["currency"]) == (None, None)


def test_failure_of_another_amount_still_fails_the_execution(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    # No money moved either way: the failure is applied, the amount it names is only recorded.
    execution_id, reference = pending_at(conn, tenant_id, "sandbox")
    event_id = f"evt_{uuid4().hex}"
    headers, body = signed_sandbox_delivery(
        event_id, FAILED, reference, "AM04", secret=CURRENT_SECRET, amount=1000, currency="EUR"
    )

    response = deliver(webhook, "sandbox", headers, body)

    assert results(response) == [("applied", False)]
    row = execution_row(admin, tenant_id, execution_id)
    assert (row["status"], row["last_error_code"]) == ("failed", "AM04")
    assert mismatch_events(admin, tenant_id, execution_id) == []
    stored = inbox_row(admin, "sandbox", event_id)
    assert stored is not None
    assert (stored["result"], stored["amount"], stored["currency"]) == ("applied", 1000, "EUR")


def test_authentic_success_with_a_malformed_amount_is_400_and_writes_nothing(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution_id, reference = pending_at(conn, tenant_id, "sandbox")
    before = history(admin, tenant_id)
    event_id = f"evt_{uuid4().hex}"
    headers, body = signed_sandbox_delivery(
        event_id, SUCCEEDED, reference, secret=CURRENT_SECRET, amount=1999, currency="EURO"
    )

    response = deliver(webhook, "sandbox", headers, body)

    assert response["statusCode"] == 400
    assert inbox_row(admin, "sandbox", event_id) is None
    assert history(admin, tenant_id) == before
    assert execution_row(admin, tenant_id, execution_id)["status"] == "pending"
