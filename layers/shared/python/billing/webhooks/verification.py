"""The raw webhook delivery as received, and the port every provider's signature scheme implements."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from billing.domain.errors import UnknownWebhookProvider, WebhookPayloadInvalid

Clock = Callable[[], datetime]

# Stripe's documented default; long enough for retries in flight and modest clock skew, short enough to bound replay.
DEFAULT_TOLERANCE = timedelta(seconds=300)


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class SignatureFailure(StrEnum):
    """Why a delivery was refused: the `reason` of SignatureInvalid, used as a metric dimension and log field."""

    MISSING_HEADER = "missing_header"
    MALFORMED_HEADER = "malformed_header"
    TIMESTAMP_OUT_OF_TOLERANCE = "timestamp_out_of_tolerance"
    MISMATCH = "mismatch"
    # Adyen classic notifications carry their signature inside each item rather than in a header.
    MISSING_SIGNATURE = "missing_signature"
    MALFORMED_PAYLOAD = "malformed_payload"


class WebhookHeaders(Mapping[str, str]):
    """Read-only HTTP headers with case-insensitive lookup (HTTP field names are case-insensitive)."""

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, str | None] | None = None) -> None:
        self._items: dict[str, str] = {}
        for name, value in (headers or {}).items():
            if value is not None:
                self._items[name.lower()] = value

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        # Names only: signature values are credentials-adjacent and stay out of reprs and logs.
        return f"WebhookHeaders({sorted(self._items)})"


@dataclass(frozen=True, slots=True)
class RawWebhook:
    """One delivery exactly as received: the body bytes are what the provider signed, never re-serialised JSON."""

    provider: str
    headers: WebhookHeaders
    body: bytes
    received_at: datetime

    @classmethod
    def from_api_gateway_event(
        cls, event: Mapping[str, Any], *, provider: str | None = None, clock: Clock = utc_now
    ) -> RawWebhook:
        """Build from an API Gateway proxy event (REST v1 or HTTP v2), base64-decoding when isBase64Encoded."""
        if provider is None:
            provider = str((event.get("pathParameters") or {}).get("provider") or "")
            if not provider:
                raise UnknownWebhookProvider(provider)
        body_text = event.get("body") or ""
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(body_text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise WebhookPayloadInvalid(provider, "body is flagged base64 but is not valid base64") from exc
        else:
            body = body_text.encode("utf-8")
        return cls(
            provider=provider,
            headers=WebhookHeaders(event.get("headers")),
            body=body,
            received_at=clock(),
        )


class WebhookVerifier(Protocol):
    """A provider's signature scheme. Returns silently when authentic, raises SignatureInvalid otherwise."""

    def verify(self, raw: RawWebhook, secrets: Sequence[str]) -> None: ...


def constant_time_equals(expected: str, received: str) -> bool:
    """Compare signatures without leaking where they differ; safe for non-ASCII input from the wire."""
    # hmac.compare_digest raises TypeError on non-ASCII str; bytes never do, so a hostile header cannot cause a 500.
    return hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8"))


def require_secrets(secrets: Sequence[str]) -> Sequence[str]:
    """Fail closed and loudly on an empty secret list: that is a deployment fault, not a bad delivery."""
    if not secrets:
        raise ValueError("no webhook secrets configured for this provider")
    return secrets
