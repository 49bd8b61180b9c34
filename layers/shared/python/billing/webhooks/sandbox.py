"""The local demo's provider: Stripe's signature scheme under `Sandbox-Signature`, with its own secret.

Body: {"id": "evt_...", "type": "payment.succeeded" | "payment.failed" | "payment.reversed" | other,
       "created": <unix seconds, optional>,
       "data": {"reference": "...", "failure_code": "...", "amount": <minor units>, "currency": "EUR"}}
`amount` and `currency` are optional, together: what the sandbox says the payment was (read on succeeded and
failed events only).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from billing.webhooks import stripe
from billing.webhooks._payload import (
    child_object,
    load_object,
    optional_money,
    optional_str,
    optional_unix_datetime,
    required_str,
)
from billing.webhooks.events import REPORTS_PAYMENT_AMOUNT, WebhookEvent, WebhookOutcome
from billing.webhooks.stripe import TimestampedHmacVerifier
from billing.webhooks.verification import DEFAULT_TOLERANCE

PROVIDER: Final = "sandbox"
SIGNATURE_HEADER: Final = "Sandbox-Signature"

OUTCOME_BY_EVENT_TYPE: Final[dict[str, WebhookOutcome]] = {
    "payment.succeeded": WebhookOutcome.SUCCEEDED,
    "payment.failed": WebhookOutcome.FAILED,
    "payment.reversed": WebhookOutcome.REVERSED,
}

# Same header format and HMAC as Stripe; only the header name and the secret differ.
sign = stripe.sign
compute_signature = stripe.compute_signature


def verifier(tolerance: timedelta = DEFAULT_TOLERANCE) -> TimestampedHmacVerifier:
    """The sandbox verifier with a configurable timestamp tolerance."""
    return TimestampedHmacVerifier(PROVIDER, SIGNATURE_HEADER, tolerance)


def parse(body: bytes) -> list[WebhookEvent]:
    """One sandbox event -> one WebhookEvent. Call only after verify()."""
    event = load_object(PROVIDER, body)
    event_id = required_str(PROVIDER, event, "id", "id")
    event_type = required_str(PROVIDER, event, "type", "type")
    occurred_at = optional_unix_datetime(PROVIDER, event, "created", "created")
    outcome = OUTCOME_BY_EVENT_TYPE.get(event_type, WebhookOutcome.IGNORED)
    if outcome is WebhookOutcome.IGNORED and not isinstance(event.get("data"), dict):
        return [WebhookEvent(PROVIDER, event_id, event_type, None, outcome, None, occurred_at)]
    data = child_object(PROVIDER, event, "data", "data")
    # An event we would act on must say which payment it is about; an ignored one may not.
    read_reference = optional_str if outcome is WebhookOutcome.IGNORED else required_str
    reference = read_reference(PROVIDER, data, "reference", "data.reference")
    paid = optional_money(PROVIDER, data, "amount", "currency", "data") if outcome in REPORTS_PAYMENT_AMOUNT else None
    amount, currency = paid or (None, None)
    return [
        WebhookEvent(
            provider=PROVIDER,
            event_id=event_id,
            event_type=event_type,
            provider_reference=reference,
            outcome=outcome,
            failure_code=optional_str(PROVIDER, data, "failure_code", "data.failure_code"),
            occurred_at=occurred_at,
            amount=amount,
            currency=currency,
        )
    ]
