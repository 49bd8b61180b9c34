"""GoCardless: `Webhook-Signature` = hex HMAC-SHA256 of the raw body; events arrive batched in `events[]`.

Scheme as documented at https://developer.gocardless.com/getting-started/staying-up-to-date-with-webhooks and
implemented by gocardless-pro-python's `gocardless_pro/webhooks.py`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from billing.domain.errors import SignatureInvalid
from billing.webhooks._payload import (
    JsonObject,
    load_object,
    object_list,
    optional_iso_datetime,
    optional_str,
    required_str,
)
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from billing.webhooks.verification import RawWebhook, SignatureFailure, constant_time_equals, require_secrets

PROVIDER: Final = "gocardless"
SIGNATURE_HEADER: Final = "Webhook-Signature"
PAYMENTS: Final = "payments"

# Actions on resource_type "payments"; every other resource type (mandates, payouts, ...) is ignored.
OUTCOME_BY_PAYMENT_ACTION: Final[dict[str, WebhookOutcome]] = {
    "confirmed": WebhookOutcome.SUCCEEDED,
    "paid_out": WebhookOutcome.SUCCEEDED,
    "failed": WebhookOutcome.FAILED,
    "cancelled": WebhookOutcome.FAILED,
    "customer_approval_denied": WebhookOutcome.FAILED,
    "charged_back": WebhookOutcome.REVERSED,
    "late_failure_settled": WebhookOutcome.REVERSED,
}


def sign(body: bytes, secret: str) -> str:
    """The Webhook-Signature value a sender holding `secret` would attach: the documented inverse of verification."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class GoCardlessVerifier:
    """GoCardless signs no timestamp: replays are absorbed by the inbox's deduplication on each event id."""

    def verify(self, raw: RawWebhook, secrets: Sequence[str]) -> None:
        """Raise SignatureInvalid unless the header is the body's HMAC under some current secret."""
        require_secrets(secrets)
        header = raw.headers.get(SIGNATURE_HEADER)
        if header is None or not header.strip():
            raise SignatureInvalid(PROVIDER, SignatureFailure.MISSING_HEADER)
        if not any(constant_time_equals(sign(raw.body, secret), header) for secret in secrets):
            raise SignatureInvalid(PROVIDER, SignatureFailure.MISMATCH)


def verifier() -> GoCardlessVerifier:
    """The GoCardless verifier."""
    return GoCardlessVerifier()


def parse(body: bytes) -> list[WebhookEvent]:
    """A GoCardless batch -> one WebhookEvent per entry of events[]. Call only after verify()."""
    document = load_object(PROVIDER, body)
    return [_event(event, index) for index, event in enumerate(object_list(PROVIDER, document, "events", "events"))]


def _event(event: JsonObject, index: int) -> WebhookEvent:
    path = f"events[{index}]"
    resource_type = required_str(PROVIDER, event, "resource_type", f"{path}.resource_type")
    action = required_str(PROVIDER, event, "action", f"{path}.action")
    outcome = (
        OUTCOME_BY_PAYMENT_ACTION.get(action, WebhookOutcome.IGNORED)
        if resource_type == PAYMENTS
        else WebhookOutcome.IGNORED
    )
    links = event.get("links")
    links = links if isinstance(links, dict) else {}
    # An event we act on must name its payment; an ignored one (a mandate, a payout) usually does not.
    read_reference = optional_str if outcome is WebhookOutcome.IGNORED else required_str
    details = event.get("details")
    return WebhookEvent(
        provider=PROVIDER,
        event_id=required_str(PROVIDER, event, "id", f"{path}.id"),
        event_type=f"{resource_type}.{action}",
        provider_reference=read_reference(PROVIDER, links, "payment", f"{path}.links.payment"),
        outcome=outcome,
        failure_code=(
            optional_str(PROVIDER, details, "cause", f"{path}.details.cause")
            if outcome in (WebhookOutcome.FAILED, WebhookOutcome.REVERSED) and isinstance(details, dict)
            else None
        ),
        occurred_at=optional_iso_datetime(PROVIDER, event, "created_at", f"{path}.created_at"),
    )
