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
from datetime import datetime, timedelta
from typing import Final

from billing.domain.errors import SignatureInvalid, WebhookPayloadInvalid
from billing.domain.reversals import ReversalKind, ReversalReport, ReversalStatus
from billing.webhooks._payload import (
    JsonObject,
    child_object,
    load_object,
    optional_money,
    optional_object,
    optional_str,
    optional_unix_datetime,
    required_money,
    required_str,
)
from billing.webhooks.events import WebhookEvent, WebhookOutcome
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

# Events about the payment itself, whose data.object is the PaymentIntent or the Charge.
OUTCOME_BY_EVENT_TYPE: Final[dict[str, WebhookOutcome]] = {
    "payment_intent.succeeded": WebhookOutcome.SUCCEEDED,
    "charge.succeeded": WebhookOutcome.SUCCEEDED,
    "payment_intent.payment_failed": WebhookOutcome.FAILED,
    # Canceled before it succeeded (our cancel after the customer's time ran out, the customer, the dashboard): it can
    # never succeed afterwards, so a pending execution ends failed.
    "payment_intent.canceled": WebhookOutcome.FAILED,
    "charge.failed": WebhookOutcome.FAILED,
}
# The failure code of a canceled intent: the provider's own code for the same answer (billing.providers.stripe).
CANCELED_CODE: Final = "canceled"

# data.object is the Charge: one reversal per refund it lists (see _charge_refunded).
CHARGE_REFUNDED: Final = "charge.refunded"
# data.object is one Refund, created or changing state (charge.refund.updated is the older name of refund.updated).
REFUND_EVENT_TYPES: Final = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
# data.object is a Dispute. The money moves when the dispute opens and, if the merchant wins, when the funds are
# reinstated. charge.dispute.closed is not read: a won dispute's money comes back with funds_reinstated, a lost one's
# left at creation. funds_withdrawn repeats creation's withdrawal under the same dispute id (the processor keeps one
# reversal per reference) and is the only report of the money leaving when an inquiry escalates to a chargeback.
DISPUTE_KIND_BY_EVENT_TYPE: Final[dict[str, ReversalKind]] = {
    "charge.dispute.created": ReversalKind.CHARGEBACK,
    "charge.dispute.funds_withdrawn": ReversalKind.CHARGEBACK,
    "charge.dispute.funds_reinstated": ReversalKind.CHARGEBACK_REVERSED,
}
# An inquiry (Amex, Discover) opens as a dispute in these states and withdraws nothing until it escalates.
INQUIRY_DISPUTE_STATUSES: Final = frozenset({"warning_needs_response", "warning_under_review", "warning_closed"})

# A Refund's status. requires_action waits on the customer (a refund to a bank account they must confirm); canceled
# never sent the money, so for what it moved it is a failure.
REFUND_STATUS_BY_STRIPE_STATUS: Final[dict[str, ReversalStatus]] = {
    "pending": ReversalStatus.PENDING,
    "requires_action": ReversalStatus.PENDING,
    "succeeded": ReversalStatus.SUCCEEDED,
    "failed": ReversalStatus.FAILED,
    "canceled": ReversalStatus.FAILED,
}
# Where a refund the engine requested carries our reversal id (ProviderRefund.refund_id).
OUR_REFUND_ID_METADATA_KEY: Final = "refund_id"


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
    """One Stripe event object -> its WebhookEvents (one, or one per refund for charge.refunded). Call after verify().

    A charge.refunded event lists every refund of the charge made so far, not only the new one, so a refund is
    reported again by each later refund of the same charge (under another derived event id). In API versions since
    2022-11-15 the Charge no longer lists its refunds: the event then yields one REFUND report whose reference is None
    and whose amount is the charge's `amount_refunded`, the cumulative total of its refunds rather than one refund's.
    A listing holds at most Stripe's first page of refunds; the others are reported by their own refund.* events.
    """
    event = load_object(PROVIDER, body)
    event_id = required_str(PROVIDER, event, "id", "id")
    event_type = required_str(PROVIDER, event, "type", "type")
    occurred_at = optional_unix_datetime(PROVIDER, event, "created", "created")
    header = _Header(event_id, event_type, occurred_at)
    if event_type in OUTCOME_BY_EVENT_TYPE:
        return [_payment_event(header, OUTCOME_BY_EVENT_TYPE[event_type], _data_object(event))]
    if event_type == CHARGE_REFUNDED:
        return _charge_refunded(header, _data_object(event))
    if event_type in REFUND_EVENT_TYPES:
        return [_refund_event(header, _data_object(event))]
    if event_type in DISPUTE_KIND_BY_EVENT_TYPE:
        return [_dispute_event(header, DISPUTE_KIND_BY_EVENT_TYPE[event_type], _data_object(event))]
    # Recorded for the audit trail only; its data.object may be any of Stripe's hundreds of shapes.
    return [header.ignored()]


@dataclass(frozen=True, slots=True)
class _Header:
    """What every Stripe event states about itself, whatever its data.object is."""

    event_id: str
    event_type: str
    occurred_at: datetime | None

    def ignored(self) -> WebhookEvent:
        return WebhookEvent(
            PROVIDER, self.event_id, self.event_type, None, WebhookOutcome.IGNORED, None, self.occurred_at
        )

    def reversed(self, payment_reference: str, report: ReversalReport, *, event_id: str | None = None) -> WebhookEvent:
        return WebhookEvent(
            provider=PROVIDER,
            event_id=event_id or self.event_id,
            event_type=self.event_type,
            provider_reference=payment_reference,
            outcome=WebhookOutcome.REVERSED,
            # The reversal row's reason is read from failure_code (db/webhook_inbox.py), as before reports existed.
            failure_code=report.reason,
            occurred_at=self.occurred_at,
            reversal=report,
        )


def _data_object(event: JsonObject) -> JsonObject:
    return child_object(PROVIDER, child_object(PROVIDER, event, "data", "data"), "object", "data.object")


def _payment_event(header: _Header, outcome: WebhookOutcome, obj: JsonObject) -> WebhookEvent:
    amount, currency = _paid(header.event_type, obj) or (None, None)
    return WebhookEvent(
        provider=PROVIDER,
        event_id=header.event_id,
        event_type=header.event_type,
        provider_reference=_payment_reference(obj),
        outcome=outcome,
        failure_code=_failure_code(header.event_type, obj),
        occurred_at=header.occurred_at,
        amount=amount,
        currency=currency,
    )


def _paid(event_type: str, obj: JsonObject) -> tuple[int, str] | None:
    """The payment's amount (Stripe's integer minor units) and currency (sent in lower case, returned upper)."""
    # A succeeded intent's amount_received is what was actually collected (less than `amount` after a partial
    # capture); a failed one received nothing, so its `amount` is what was asked. A charge's `amount` is the charge.
    amount_key = (
        "amount_received"
        if event_type == "payment_intent.succeeded" and obj.get("amount_received") is not None
        else "amount"
    )
    return optional_money(PROVIDER, obj, amount_key, "currency", "data.object", lower_case_currency=True)


def _payment_reference(obj: JsonObject) -> str:
    """The payment intent id our executions store: the object itself, or the intent a charge belongs to."""
    # payment_intent.* objects are the intent; charges point at it (charges made without an intent only have their id).
    return _linked_payment(obj, "data.object") or required_str(PROVIDER, obj, "id", "data.object.id")


def _linked_payment(obj: JsonObject, path: str) -> str | None:
    """The payment a charge, refund or dispute belongs to: its intent, else (older objects) its charge."""
    for key in ("payment_intent", "charge"):
        linked = optional_str(PROVIDER, obj, key, f"{path}.{key}")
        if linked is not None:
            return linked
    return None


def _required_linked_payment(obj: JsonObject, path: str) -> str:
    linked = _linked_payment(obj, path)
    if linked is None:
        raise WebhookPayloadInvalid(PROVIDER, f"{path}.payment_intent or {path}.charge must be a non-empty string")
    return linked


def _failure_code(event_type: str, obj: JsonObject) -> str | None:
    match event_type:
        case "payment_intent.payment_failed":
            error = obj.get("last_payment_error")
            if isinstance(error, dict):
                # The issuer's reason (insufficient_funds, ...) when Stripe gives one, as the provider keeps it.
                decline = optional_str(PROVIDER, error, "decline_code", "data.object.last_payment_error.decline_code")
                return decline or optional_str(PROVIDER, error, "code", "data.object.last_payment_error.code")
            return None
        case "payment_intent.canceled":
            return CANCELED_CODE
        case "charge.failed":
            return optional_str(PROVIDER, obj, "failure_code", "data.object.failure_code")
        case _:
            return None


def _charge_refunded(header: _Header, charge: JsonObject) -> list[WebhookEvent]:
    payment = _payment_reference(charge)
    listed = _listed_refunds(charge)
    if not listed:
        # Only the total is known; the processor tells it from one refund by the missing reference (see parse).
        cumulative = required_money(
            PROVIDER, charge, "amount_refunded", "currency", "data.object", lower_case_currency=True
        )
        return [header.reversed(payment, ReversalReport(ReversalKind.REFUND, cumulative, ReversalStatus.SUCCEEDED))]
    events = []
    for index, refund in enumerate(listed):
        report = _refund_report(refund, f"data.object.refunds.data[{index}]")
        # Each refund is its own inbox row: the event id alone would deduplicate away every refund after the first.
        events.append(header.reversed(payment, report, event_id=f"{header.event_id}:{report.reference}"))
    return events


def _listed_refunds(charge: JsonObject) -> list[JsonObject]:
    """The Refunds a Charge lists in `refunds.data` (a Stripe list object); none when it has no `refunds`."""
    refunds = optional_object(PROVIDER, charge, "refunds", "data.object.refunds")
    if refunds is None:
        return []
    listed = refunds.get("data")
    if not isinstance(listed, list) or not all(isinstance(refund, dict) for refund in listed):
        raise WebhookPayloadInvalid(PROVIDER, "data.object.refunds.data must be an array of objects")
    return listed


def _refund_event(header: _Header, refund: JsonObject) -> WebhookEvent:
    return header.reversed(_required_linked_payment(refund, "data.object"), _refund_report(refund, "data.object"))


def _refund_report(refund: JsonObject, path: str) -> ReversalReport:
    status = _refund_status(refund, path)
    metadata = optional_object(PROVIDER, refund, "metadata", f"{path}.metadata") or {}
    our_key = OUR_REFUND_ID_METADATA_KEY
    # `reason` is why the refund was asked for (duplicate, fraudulent, ...); a failed one says why it failed instead.
    reason = optional_str(PROVIDER, refund, "reason", f"{path}.reason")
    if status is ReversalStatus.FAILED:
        reason = optional_str(PROVIDER, refund, "failure_reason", f"{path}.failure_reason") or reason
    return ReversalReport(
        kind=ReversalKind.REFUND,
        money=required_money(PROVIDER, refund, "amount", "currency", path, lower_case_currency=True),
        status=status,
        reference=required_str(PROVIDER, refund, "id", f"{path}.id"),
        our_reference=optional_str(PROVIDER, metadata, our_key, f"{path}.metadata.{our_key}"),
        reason=reason,
    )


def _refund_status(refund: JsonObject, path: str) -> ReversalStatus:
    # Nullable in Stripe's reference, and Stripe adds states: neither is read as final, so the refund stays open
    # until a later event or a status check says how it ended, and nothing is counted as settled that was not.
    stripe_status = optional_str(PROVIDER, refund, "status", f"{path}.status")
    return REFUND_STATUS_BY_STRIPE_STATUS.get(stripe_status or "", ReversalStatus.PENDING)


def _dispute_event(header: _Header, kind: ReversalKind, dispute: JsonObject) -> WebhookEvent:
    status = optional_str(PROVIDER, dispute, "status", "data.object.status")
    if header.event_type == "charge.dispute.created" and status in INQUIRY_DISPUTE_STATUSES:
        # Nothing was withdrawn; if the inquiry escalates, funds_withdrawn reports the chargeback.
        return header.ignored()
    report = ReversalReport(
        kind=kind,
        money=required_money(PROVIDER, dispute, "amount", "currency", "data.object", lower_case_currency=True),
        # The money has moved by the time Stripe reports either event: withdrawn on opening, returned on reinstating.
        status=ReversalStatus.SUCCEEDED,
        reference=required_str(PROVIDER, dispute, "id", "data.object.id"),
        reason=optional_str(PROVIDER, dispute, "reason", "data.object.reason"),
    )
    return header.reversed(_required_linked_payment(dispute, "data.object"), report)
