"""Adyen: HMAC-SHA256 keyed with the hex-decoded HMAC key, base64 output, and standard-notification parsing.

Two documented variants (https://docs.adyen.com/development-resources/webhooks/secure-webhooks/verify-hmac-signatures):
- standard notifications sign, per item, "pspReference:originalReference:merchantAccountCode:merchantReference:
  value:currency:eventCode:success" and carry the result in NotificationRequestItem.additionalData.hmacSignature;
  every item of a batch must verify, or the whole delivery is refused;
- other webhooks sign the raw body and send the result in the `HmacSignature` header. A delivery carrying that
  header is verified that way only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from billing.domain.errors import SignatureInvalid, WebhookPayloadInvalid
from billing.domain.reversals import ReversalKind, ReversalReport, ReversalStatus
from billing.webhooks._payload import (
    JsonObject,
    child_object,
    load_object,
    object_list,
    optional_iso_datetime,
    optional_money,
    optional_str,
    required_money,
    required_str,
)
from billing.webhooks.events import REPORTS_PAYMENT_AMOUNT, WebhookEvent, WebhookOutcome
from billing.webhooks.verification import RawWebhook, SignatureFailure, constant_time_equals, require_secrets

PROVIDER: Final = "adyen"
SIGNATURE_HEADER: Final = "HmacSignature"
# Order fixed by Adyen; a missing field contributes an empty string, so "::" appears when originalReference is absent.
SIGNED_FIELDS: Final = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)

# (eventCode, success) -> the reversal an item reports, as (kind, status). A refund we requested is reported
# either way: success=false (refused at once) and REFUND_FAILED (failed after a success) are its final answer. A
# chargeback code with success=false moved no money, so it is recorded and ignored.
REVERSAL_BY_EVENT: Final[dict[tuple[str, bool], tuple[ReversalKind, ReversalStatus]]] = {
    ("REFUND", True): (ReversalKind.REFUND, ReversalStatus.SUCCEEDED),
    ("REFUND", False): (ReversalKind.REFUND, ReversalStatus.FAILED),
    ("REFUND_FAILED", True): (ReversalKind.REFUND, ReversalStatus.FAILED),
    ("CANCEL_OR_REFUND", True): (ReversalKind.CANCEL_OR_REFUND, ReversalStatus.SUCCEEDED),
    ("CANCEL_OR_REFUND", False): (ReversalKind.CANCEL_OR_REFUND, ReversalStatus.FAILED),
    ("CHARGEBACK", True): (ReversalKind.CHARGEBACK, ReversalStatus.SUCCEEDED),
    ("SECOND_CHARGEBACK", True): (ReversalKind.SECOND_CHARGEBACK, ReversalStatus.SUCCEEDED),
    ("CHARGEBACK_REVERSED", True): (ReversalKind.CHARGEBACK_REVERSED, ReversalStatus.SUCCEEDED),
    ("REFUNDED_REVERSED", True): (ReversalKind.REFUND_REVERSED, ReversalStatus.SUCCEEDED),
}

# (eventCode, success) -> outcome; every other pair is recorded and ignored.
OUTCOME_BY_EVENT: Final[dict[tuple[str, bool], WebhookOutcome]] = {
    ("AUTHORISATION", True): WebhookOutcome.SUCCEEDED,
    ("AUTHORISATION", False): WebhookOutcome.FAILED,
    **dict.fromkeys(REVERSAL_BY_EVENT, WebhookOutcome.REVERSED),
}

# Modifications we request, whose merchantReference is the reference we sent with them: our reversal id. A
# dispute's merchantReference is the payment's (our execution id), which names no reversal.
ECHOES_OUR_REFERENCE: Final = frozenset({"REFUND", "REFUND_FAILED", "CANCEL_OR_REFUND"})


def signing_string(item: Mapping[str, Any]) -> str:
    """The string Adyen signs for one NotificationRequestItem (values joined as sent, without escaping)."""
    # No escaping of ':' or '\\' in values: Adyen's own signatures on notifications whose merchantReference holds
    # those characters (adyen-python-api-library test/mocks/util/*_notification.json) verify only unescaped.
    amount = item.get("amount")
    amount_fields = amount if isinstance(amount, Mapping) else {}
    values = {**item, "value": amount_fields.get("value"), "currency": amount_fields.get("currency")}
    return ":".join("" if values.get(name) is None else str(values[name]) for name in SIGNED_FIELDS)


def _hmac_base64(hex_key: str, message: bytes) -> str:
    # The key is configured as hex and used as the bytes it encodes; bytes.fromhex raises on a malformed key,
    # which is a deployment fault (500), not a bad delivery.
    digest = hmac.new(bytes.fromhex(hex_key), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_notification_item(item: Mapping[str, Any], hex_key: str) -> str:
    """The additionalData.hmacSignature Adyen would put on this item: the documented inverse of verification."""
    return _hmac_base64(hex_key, signing_string(item).encode("utf-8"))


def sign_payload(body: bytes, hex_key: str) -> str:
    """The HmacSignature header value for a raw-body-signed delivery."""
    return _hmac_base64(hex_key, body)


@dataclass(frozen=True, slots=True)
class AdyenVerifier:
    """Adyen carries no signed timestamp: replays are absorbed by the inbox's deduplication on the event id."""

    def verify(self, raw: RawWebhook, secrets: Sequence[str]) -> None:
        """Raise SignatureInvalid unless the header signature, or every item's signature, matches a current key."""
        require_secrets(secrets)
        header = raw.headers.get(SIGNATURE_HEADER)
        if header is not None:
            if not header.strip():
                raise SignatureInvalid(PROVIDER, SignatureFailure.MALFORMED_HEADER)
            if not any(constant_time_equals(sign_payload(raw.body, key), header) for key in secrets):
                raise SignatureInvalid(PROVIDER, SignatureFailure.MISMATCH)
            return
        for item in _items_to_verify(raw.body):
            received = _item_signature(item)
            if not any(constant_time_equals(sign_notification_item(item, key), received) for key in secrets):
                raise SignatureInvalid(PROVIDER, SignatureFailure.MISMATCH)


def _items_to_verify(body: bytes) -> list[Mapping[str, Any]]:
    """The NotificationRequestItems whose signatures must all verify; any doubt about the shape fails closed."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SignatureInvalid(PROVIDER, SignatureFailure.MALFORMED_PAYLOAD) from exc
    wrappers = document.get("notificationItems") if isinstance(document, dict) else None
    # An empty batch would verify vacuously; refuse it rather than acknowledge an unsigned delivery.
    if not isinstance(wrappers, list) or not wrappers:
        raise SignatureInvalid(PROVIDER, SignatureFailure.MALFORMED_PAYLOAD)
    items: list[Mapping[str, Any]] = []
    for wrapper in wrappers:
        item = wrapper.get("NotificationRequestItem") if isinstance(wrapper, dict) else None
        if not isinstance(item, dict):
            raise SignatureInvalid(PROVIDER, SignatureFailure.MALFORMED_PAYLOAD)
        items.append(item)
    return items


def _item_signature(item: Mapping[str, Any]) -> str:
    additional = item.get("additionalData")
    signature = additional.get("hmacSignature") if isinstance(additional, dict) else None
    if not isinstance(signature, str) or not signature:
        raise SignatureInvalid(PROVIDER, SignatureFailure.MISSING_SIGNATURE)
    return signature


def verifier() -> AdyenVerifier:
    """The Adyen verifier (both variants)."""
    return AdyenVerifier()


def parse(body: bytes) -> list[WebhookEvent]:
    """A standard notification batch -> one WebhookEvent per NotificationRequestItem. Call only after verify()."""
    document = load_object(PROVIDER, body)
    wrappers = object_list(PROVIDER, document, "notificationItems", "notificationItems")
    return [
        _event(child_object(PROVIDER, wrapper, "NotificationRequestItem", f"notificationItems[{index}]"), index)
        for index, wrapper in enumerate(wrappers)
    ]


def _event(item: JsonObject, index: int) -> WebhookEvent:
    path = f"notificationItems[{index}].NotificationRequestItem"
    psp_reference = required_str(PROVIDER, item, "pspReference", f"{path}.pspReference")
    event_code = required_str(PROVIDER, item, "eventCode", f"{path}.eventCode")
    success_text = item.get("success")
    if success_text not in ("true", "false"):
        raise WebhookPayloadInvalid(PROVIDER, f'{path}.success must be "true" or "false"')
    success = success_text == "true"
    outcome = OUTCOME_BY_EVENT.get((event_code, success), WebhookOutcome.IGNORED)
    # `reason` and `eventDate` are outside the signed fields: informative only, never used to pick a transition.
    reason = optional_str(PROVIDER, item, "reason", f"{path}.reason")
    reversal = _reversal(item, event_code, success, psp_reference, reason, path)
    if reversal is not None:
        # A modification (refund, chargeback) has its own pspReference and names the payment in originalReference;
        # without it there is no payment to record the reversal against.
        payment_reference = required_str(PROVIDER, item, "originalReference", f"{path}.originalReference")
    else:
        # An authorisation's own pspReference is the payment.
        original_reference = optional_str(PROVIDER, item, "originalReference", f"{path}.originalReference")
        payment_reference = original_reference or psp_reference
    amount, currency = _paid(item, outcome, path) or (None, None)
    return WebhookEvent(
        provider=PROVIDER,
        # Adyen has no event id; pspReference + eventCode + success is what identifies a notification (retries
        # repeat all three), and success keeps a failed and a later successful report of one event code apart.
        event_id=f"{psp_reference}:{event_code}:{success_text}",
        event_type=event_code,
        provider_reference=payment_reference,
        outcome=outcome,
        failure_code=reason if outcome in (WebhookOutcome.FAILED, WebhookOutcome.REVERSED) else None,
        occurred_at=optional_iso_datetime(PROVIDER, item, "eventDate", f"{path}.eventDate"),
        amount=amount,
        currency=currency,
        reversal=reversal,
    )


def _reversal(
    item: JsonObject, event_code: str, success: bool, psp_reference: str, reason: str | None, path: str
) -> ReversalReport | None:
    """The reversal a refund or dispute item reports, with the amount it moved (signed amount.value / currency)."""
    reported = REVERSAL_BY_EVENT.get((event_code, success))
    if reported is None:
        return None
    kind, status = reported
    amount = child_object(PROVIDER, item, "amount", f"{path}.amount")
    our_reference = (
        optional_str(PROVIDER, item, "merchantReference", f"{path}.merchantReference")
        if event_code in ECHOES_OUR_REFERENCE
        else None
    )
    return ReversalReport(
        kind=kind,
        money=required_money(PROVIDER, amount, "value", "currency", f"{path}.amount"),
        status=status,
        reference=psp_reference,
        our_reference=our_reference,
        reason=reason,
    )


def _paid(item: JsonObject, outcome: WebhookOutcome, path: str) -> tuple[int, str] | None:
    """amount.value (minor units) and amount.currency of an authorisation: signed fields, unlike reason and date."""
    if outcome not in REPORTS_PAYMENT_AMOUNT or item.get("amount") is None:
        return None
    return optional_money(
        PROVIDER, child_object(PROVIDER, item, "amount", f"{path}.amount"), "value", "currency", f"{path}.amount"
    )
