"""verified_events: provider lookup before any secret, signature before any parsing; and the demo's signed delivery."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from billing.domain.errors import SignatureInvalid, UnknownWebhookProvider
from billing.services.webhook_processing import DeliveryResult, EventResult, WebhookResult, verified_events
from billing.webhooks.delivery import DEFAULT_SANDBOX_SECRET, FAILED, SUCCEEDED, signed_sandbox_delivery
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from billing.webhooks.registry import build_registry
from billing.webhooks.secrets import DEV_WEBHOOK_SECRETS
from tests.unit.webhooks.factories import NOW, at, raw

REGISTRY = build_registry()


class RecordingSecrets:
    """The secrets port, remembering which providers were asked for."""

    def __init__(self, secrets: Sequence[str] = (DEFAULT_SANDBOX_SECRET,)) -> None:
        self.asked: list[str] = []
        self._secrets = tuple(secrets)

    def secrets_for(self, provider: str) -> Sequence[str]:
        self.asked.append(provider)
        return self._secrets


def test_signed_sandbox_delivery_verifies_and_parses_to_the_event_it_describes() -> None:
    headers, body = signed_sandbox_delivery("evt_demo_1", FAILED, "sbx_pay_9", "AM04", now=NOW)

    events = verified_events(raw("sandbox", body, headers), REGISTRY, RecordingSecrets())

    assert events == [WebhookEvent("sandbox", "evt_demo_1", FAILED, "sbx_pay_9", WebhookOutcome.FAILED, "AM04", NOW)]
    assert headers["Content-Type"] == "application/json"


def test_signed_sandbox_delivery_with_amount_parses_to_the_amount_it_describes() -> None:
    headers, body = signed_sandbox_delivery("evt_demo_3", SUCCEEDED, "sbx_pay_9", now=NOW, amount=1999, currency="EUR")

    [event] = verified_events(raw("sandbox", body, headers), REGISTRY, RecordingSecrets())

    assert (event.outcome, event.amount, event.currency) == (WebhookOutcome.SUCCEEDED, 1999, "EUR")


def test_signed_sandbox_delivery_by_default_verifies_against_the_secrets_the_local_stack_seeds() -> None:
    headers, body = signed_sandbox_delivery("evt_demo_2", SUCCEEDED, "sbx_pay_9", now=NOW)

    events = verified_events(raw("sandbox", body, headers), REGISTRY, RecordingSecrets(DEV_WEBHOOK_SECRETS["sandbox"]))

    assert [(e.event_id, e.outcome) for e in events] == [("evt_demo_2", WebhookOutcome.SUCCEEDED)]


def test_signed_sandbox_delivery_with_another_secret_is_refused() -> None:
    headers, body = signed_sandbox_delivery("evt_1", SUCCEEDED, "sbx_1", secret="whsec_other", now=NOW)

    with pytest.raises(SignatureInvalid) as refused:
        verified_events(raw("sandbox", body, headers), REGISTRY, RecordingSecrets())
    assert refused.value.reason == "mismatch"


def test_signed_sandbox_delivery_older_than_the_tolerance_is_refused() -> None:
    headers, body = signed_sandbox_delivery("evt_1", SUCCEEDED, "sbx_1", now=NOW)

    with pytest.raises(SignatureInvalid) as refused:
        verified_events(
            raw("sandbox", body, headers, received_at=at(timedelta(minutes=6).total_seconds())),
            REGISTRY,
            RecordingSecrets(),
        )
    assert refused.value.reason == "timestamp_out_of_tolerance"


def test_unknown_provider_is_refused_before_any_secret_is_read() -> None:
    secrets = RecordingSecrets()

    with pytest.raises(UnknownWebhookProvider):
        verified_events(raw("paypal", b"{}", {}), REGISTRY, secrets)
    assert secrets.asked == []


def test_bad_signature_is_refused_before_the_body_is_parsed() -> None:
    # Not even JSON: had it been parsed first, this would be a payload error rather than a signature refusal.
    body = b"\xff not json"

    with pytest.raises(SignatureInvalid):
        verified_events(raw("sandbox", body, {"Sandbox-Signature": "t=1,v1=00"}), REGISTRY, RecordingSecrets())


def test_delivery_result_lists_the_events_to_redeliver() -> None:
    delivery = DeliveryResult(
        "gocardless",
        (
            EventResult("gocardless", "EV1", "payments.confirmed", WebhookResult.APPLIED),
            EventResult("gocardless", "EV2", "payments.failed", WebhookResult.RETRY_LATER),
            EventResult("gocardless", "EV3", "payments.failed", WebhookResult.APPLIED, duplicate=True),
        ),
    )

    assert delivery.retry_later == ("EV2",)
