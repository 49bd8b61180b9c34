"""The relay's one port: something that puts a call's worth of events on the bus and answers per entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from billing.outbox.events import OutboundEvent, PublishResult


class PublishUnavailable(Exception):
    """The whole call failed (network, throttling of the call, permissions): no entry is known to be accepted.

    Some may have been, if the answer was lost; the relay counts them as failed and publishes them again later,
    which is why delivery is at least once.
    """

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message


class EventPublisher(Protocol):
    """Puts at most one PutEvents call's worth of events on the bus (see billing.outbox.chunking).

    The relay makes several calls at once, from threads of its own: publish must be safe to call concurrently
    (a boto3 client is).
    """

    def publish(self, events: Sequence[OutboundEvent]) -> list[PublishResult]:
        """One result per event, in the same order; raises PublishUnavailable when the call itself failed."""
        ...
