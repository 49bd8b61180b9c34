"""Builders for webhook deliveries, so each test states only the field it is about."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from billing.webhooks import adyen
from billing.webhooks.verification import RawWebhook, WebhookHeaders

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW_UNIX = int(NOW.timestamp())


def raw(
    provider: str, body: bytes, headers: Mapping[str, str] | None = None, *, received_at: datetime = NOW
) -> RawWebhook:
    return RawWebhook(provider=provider, headers=WebhookHeaders(headers), body=body, received_at=received_at)


def at(seconds_from_now: float) -> datetime:
    return NOW + timedelta(seconds=seconds_from_now)


def api_gateway_event(
    provider: str, body: bytes, headers: Mapping[str, str], *, base64_encoded: bool = False
) -> dict[str, Any]:
    """An API Gateway REST proxy event as Lambda receives it."""
    return {
        "resource": "/api/v1/billing/webhook/{provider}",
        "httpMethod": "POST",
        "pathParameters": {"provider": provider},
        "headers": dict(headers),
        "isBase64Encoded": base64_encoded,
        "body": base64.b64encode(body).decode("ascii") if base64_encoded else body.decode("utf-8"),
    }


def stripe_event(event_type: str, obj: Mapping[str, Any] | None = None, *, event_id: str = "evt_1") -> bytes:
    payload: dict[str, Any] = {"id": event_id, "object": "event", "type": event_type, "created": NOW_UNIX}
    payload["data"] = {"object": dict(obj or {"id": "pi_1", "object": "payment_intent"})}
    return json.dumps(payload).encode()


def adyen_item(
    *,
    psp_reference: str = "PSP0000000000001",
    event_code: str = "AUTHORISATION",
    success: str = "true",
    original_reference: str | None = None,
    value: int = 1130,
    currency: str = "EUR",
    reason: str = "",
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pspReference": psp_reference,
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "exec-1",
        "amount": {"value": value, "currency": currency},
        "eventCode": event_code,
        "eventDate": "2026-03-01T13:00:00+01:00",
        "success": success,
        "reason": reason,
    }
    if original_reference is not None:
        item["originalReference"] = original_reference
    return item


def adyen_notification(items: Sequence[Mapping[str, Any]], hex_key: str | None = None) -> bytes:
    """A standard notification batch; each item signed with hex_key when given, exactly as Adyen would."""
    wrapped = []
    for item in items:
        signed = dict(item)
        if hex_key is not None:
            signed["additionalData"] = {"hmacSignature": adyen.sign_notification_item(item, hex_key)}
        wrapped.append({"NotificationRequestItem": signed})
    return json.dumps({"live": "false", "notificationItems": wrapped}).encode()


def gocardless_event(
    action: str, *, event_id: str = "EV0001", resource_type: str = "payments", payment: str | None = "PM0001"
) -> dict[str, Any]:
    links = {"payment": payment} if payment is not None else {"mandate": "MD0001"}
    return {
        "id": event_id,
        "created_at": "2026-03-01T12:00:00.000Z",
        "resource_type": resource_type,
        "action": action,
        "links": links,
        "details": {"origin": "bank", "cause": f"payment_{action}", "description": "..."},
        "metadata": {},
    }


def gocardless_batch(*events: Mapping[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def sandbox_event(
    event_type: str,
    *,
    event_id: str = "evt_sbx_1",
    reference: str | None = "sbx_pay_1",
    failure_code: str | None = None,
    amount: object = None,
    currency: object = None,
) -> bytes:
    """A sandbox event; `amount` and `currency` are sent only when given, as anything JSON holds (to test refusals)."""
    data: dict[str, Any] = {}
    if reference is not None:
        data["reference"] = reference
    if failure_code is not None:
        data["failure_code"] = failure_code
    if amount is not None:
        data["amount"] = amount
    if currency is not None:
        data["currency"] = currency
    return json.dumps({"id": event_id, "type": event_type, "created": NOW_UNIX, "data": data}).encode()
