"""What a verified webhook says, reduced to the few facts the engine acts on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class WebhookOutcome(StrEnum):
    """What an event means for the payment it references."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Money came back after a success: chargeback, refund, late failure. Recorded, never a silent status rewrite.
    REVERSED = "reversed"
    # A type we do not act on: recorded and acknowledged so the provider stops retrying.
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One provider event. `event_id` is the provider's id (or a derived one) and is the deduplication key."""

    provider: str
    event_id: str
    event_type: str
    provider_reference: str | None
    outcome: WebhookOutcome
    failure_code: str | None = None
    occurred_at: datetime | None = None


WebhookParser = Callable[[bytes], list[WebhookEvent]]
