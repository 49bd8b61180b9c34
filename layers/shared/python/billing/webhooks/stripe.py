"""Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`, hex HMAC-SHA256 of "{t}.{raw body}", and event parsing.

Scheme as documented at https://docs.stripe.com/webhooks#verify-manually and implemented by stripe-python's
`WebhookSignature.verify_header`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from billing.domain.errors import SignatureInvalid
from billing.webhooks._payload import (
    JsonObject,
    child_object,
    load_object,
    optional_money,
    optional_str,
    optional_unix_datetime,
    required_str,
)
from billing.webhooks.events import REPORTS_PAYMENT_AMOUNT, WebhookEvent, WebhookOutcome
from billing.webhooks.verification import (
    DEFAULT_TOLERANCE,
    RawWebhook,
    SignatureFailure,
    constant_time_equals,
    require_secrets,
)

PROVIDER: Final = "stripe"
SIGNATURE_HEADER: Final = "Stripe-Signature"
# Only v1 is a live-mode HMAC-SHA256; v0 is a test-mode artefact Stripe may append, and is ignored as Stripe does.
_EXPECTED_SCHEME: Final = "v1"
# Digits only: int() would also accept "+1", " 1" and "1_0", none of which Stripe sends.
_UNIX_SECONDS = re.compile(r"^[0-9]{1,12}$")

OUTCOME_BY_EVENT_TYPE: Final[dict[str, WebhookOutcome]] = {
    "payment_intent.succeeded": WebhookOutcome.SUCCEEDED,
    "charge.succeeded": WebhookOutcome.SUCCEEDED,
    "payment_intent.payment_failed": WebhookOutcome.FAILED,
    "charge.failed": WebhookOutcome.FAILED,
    "charge.dispute.created": WebhookOutcome.REVERSED,
    "charge.refunded": WebhookOutcome.REVERSED,
}


def compute_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of "{timestamp}.{body}" keyed with the endpoint secret (used whole, whsec_ prefix included)."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The header value a sender holding `secret` would attach: the documented inverse of verification."""
    return f"t={timestamp},{_EXPECTED_SCHEME}={compute_signature(body, secret, timestamp)}"


@dataclass(frozen=True, slots=True)
class TimestampedHmacVerifier:
    """Stripe's scheme, parameterised by provider name and header so the sandbox can reuse it with its own secret.

    The timestamp is compared with `raw.received_at` (stamped by the injected clock when the delivery is read), so
    tests move time by building the RawWebhook, never by sleeping. Deliveries more than `tolerance` old, or more than
    `tolerance` in the future, are refused: the signed timestamp is what bounds replay of a captured delivery.
    """

    provider: str
    header: str
    tolerance: timedelta = DEFAULT_TOLERANCE

    def verify(self, raw: RawWebhook, secrets: Sequence[str]) -> None:
        """Raise SignatureInvalid unless some v1 signature matches some current secret within the tolerance."""
        require_secrets(secrets)
        header = raw.headers.get(self.header)
        if header is None or not header.strip():
            raise SignatureInvalid(self.provider, SignatureFailure.MISSING_HEADER)
        timestamp, candidates = self._parse_header(header)
        expected = [compute_signature(raw.body, secret, timestamp) for secret in secrets]
        # Any listed v1 may match any current secret: Stripe lists several during its own secret roll, and we hold
        # several during ours.
        if not any(constant_time_equals(e, c) for e in expected for c in candidates):
            raise SignatureInvalid(self.provider, SignatureFailure.MISMATCH)
        # Checked after the HMAC, as Stripe does: "out of tolerance" is then only ever said of an authentic delivery,
        # which is what an operator needs to tell a stale replay from a forgery.
        # Seconds, not datetimes: a hostile 12-digit timestamp would overflow datetime's year range.
        if abs(raw.received_at.timestamp() - timestamp) > self.tolerance.total_seconds():
            raise SignatureInvalid(self.provider, SignatureFailure.TIMESTAMP_OUT_OF_TOLERANCE)

    def _parse_header(self, header: str) -> tuple[int, list[str]]:
        timestamp: int | None = None
        candidates: list[str] = []
        for item in header.split(","):
            key, sep, value = item.strip().partition("=")
            if not sep:
                continue
            if key == "t":
                if timestamp is not None or not _UNIX_SECONDS.fullmatch(value):
                    raise SignatureInvalid(self.provider, SignatureFailure.MALFORMED_HEADER)
                timestamp = int(value)
            elif key == _EXPECTED_SCHEME and value:
                candidates.append(value)
        if timestamp is None or not candidates:
            raise SignatureInvalid(self.provider, SignatureFailure.MALFORMED_HEADER)
        return timestamp, candidates


def verifier(tolerance: timedelta = DEFAULT_TOLERANCE) -> TimestampedHmacVerifier:
    """The Stripe verifier with a configurable timestamp tolerance."""
    return TimestampedHmacVerifier(PROVIDER, SIGNATURE_HEADER, tolerance)


def parse(body: bytes) -> list[WebhookEvent]:
    """One Stripe event object -> one WebhookEvent. Call only after verify()."""
    event = load_object(PROVIDER, body)
    event_id = required_str(PROVIDER, event, "id", "id")
    event_type = required_str(PROVIDER, event, "type", "type")
    occurred_at = optional_unix_datetime(PROVIDER, event, "created", "created")
    outcome = OUTCOME_BY_EVENT_TYPE.get(event_type, WebhookOutcome.IGNORED)
    if outcome is WebhookOutcome.IGNORED:
        # Recorded for the audit trail only; its data.object may be any of Stripe's hundreds of shapes.
        return [WebhookEvent(PROVIDER, event_id, event_type, None, outcome, None, occurred_at)]
    obj = child_object(PROVIDER, child_object(PROVIDER, event, "data", "data"), "object", "data.object")
    amount, currency = _paid(event_type, outcome, obj) or (None, None)
    return [
        WebhookEvent(
            provider=PROVIDER,
            event_id=event_id,
            event_type=event_type,
            provider_reference=_payment_reference(obj),
            outcome=outcome,
            failure_code=_failure_code(event_type, obj),
            occurred_at=occurred_at,
            amount=amount,
            currency=currency,
        )
    ]


def _paid(event_type: str, outcome: WebhookOutcome, obj: JsonObject) -> tuple[int, str] | None:
    """The payment's amount (Stripe's integer minor units) and currency (sent in lower case, returned upper)."""
    if outcome not in REPORTS_PAYMENT_AMOUNT:
        return None
    # A succeeded intent's amount_received is what was actually collected (less than `amount` after a partial
    # capture); a failed one received nothing, so its `amount` is what was asked. A charge's `amount` is the charge.
    amount_key = (
        "amount_received"
        if event_type == "payment_intent.succeeded" and obj.get("amount_received") is not None
        else "amount"
    )
    return optional_money(PROVIDER, obj, amount_key, "currency", "data.object", lower_case_currency=True)


def _payment_reference(obj: JsonObject) -> str:
    """The payment intent id our executions store: the object itself, or the intent a charge or dispute belongs to."""
    # payment_intent.* objects are the intent; charges and disputes point at it (older disputes only at the charge).
    for key in ("payment_intent", "charge"):
        linked = optional_str(PROVIDER, obj, key, f"data.object.{key}")
        if linked is not None:
            return linked
    return required_str(PROVIDER, obj, "id", "data.object.id")


def _failure_code(event_type: str, obj: JsonObject) -> str | None:
    match event_type:
        case "payment_intent.payment_failed":
            error = obj.get("last_payment_error")
            if isinstance(error, dict):
                return optional_str(PROVIDER, error, "code", "data.object.last_payment_error.code")
            return None
        case "charge.failed":
            return optional_str(PROVIDER, obj, "failure_code", "data.object.failure_code")
        case "charge.dispute.created":
            return optional_str(PROVIDER, obj, "reason", "data.object.reason")
        case _:
            return None
