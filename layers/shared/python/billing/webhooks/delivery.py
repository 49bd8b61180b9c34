"""Signed sandbox deliveries, built exactly as the sandbox provider would send them (demo, local stack, tests).

`headers, body = signed_sandbox_delivery("evt_1", "payment.succeeded", "sbx_...")`, then POST exactly those body
bytes with those headers to {API_BASE_PATH}/webhook/sandbox. `amount=1999, currency="EUR"` makes the event say
what was paid, as real providers do; without them the event names no amount and none is compared.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from billing.webhooks import sandbox
from billing.webhooks.secrets import DEV_WEBHOOK_SECRETS
from billing.webhooks.verification import utc_now

# What the local stack seeds into (moto) Secrets Manager when BILLING_WEBHOOK_SECRETS is unset.
DEFAULT_SANDBOX_SECRET = DEV_WEBHOOK_SECRETS[sandbox.PROVIDER][0]

SUCCEEDED = "payment.succeeded"
FAILED = "payment.failed"
REVERSED = "payment.reversed"


def sandbox_event_body(
    event_id: str,
    event_type: str,
    reference: str | None,
    failure_code: str | None = None,
    *,
    created: datetime | None = None,
    amount: int | None = None,
    currency: str | None = None,
) -> bytes:
    """The body of one sandbox event (the format billing.webhooks.sandbox parses); only the fields given are sent."""
    data: dict[str, Any] = {}
    if reference is not None:
        data["reference"] = reference
    if failure_code is not None:
        data["failure_code"] = failure_code
    if amount is not None:
        data["amount"] = amount
    if currency is not None:
        data["currency"] = currency
    moment = created or utc_now()
    document = {"id": event_id, "type": event_type, "created": int(moment.timestamp()), "data": data}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def signed_sandbox_delivery(
    event_id: str,
    event_type: str,
    reference: str | None,
    failure_code: str | None = None,
    *,
    secret: str = DEFAULT_SANDBOX_SECRET,
    now: datetime | None = None,
    amount: int | None = None,
    currency: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a sandbox delivery signed with `secret` at `now` (default: the current time).

    Send the body bytes unchanged: the signature covers them exactly, so re-serialising the JSON breaks it.
    """
    moment = now or utc_now()
    body = sandbox_event_body(
        event_id, event_type, reference, failure_code, created=moment, amount=amount, currency=currency
    )
    headers = {
        "Content-Type": "application/json",
        sandbox.SIGNATURE_HEADER: sandbox.sign(body, secret, int(moment.timestamp())),
    }
    return headers, body
