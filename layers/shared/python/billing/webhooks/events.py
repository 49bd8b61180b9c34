"""What a verified webhook says, reduced to the few facts the engine acts on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from billing.domain.reversals import ReversalReport


class WebhookOutcome(StrEnum):
    """What an event means for the payment it references."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Money came back after a success: chargeback, refund, late failure. Recorded, never a silent status rewrite.
    REVERSED = "reversed"
    # A type we do not act on: recorded and acknowledged so the provider stops retrying.
    IGNORED = "ignored"


# Outcomes whose event reports the payment itself, so an amount it carries is the payment's. A refund or chargeback
# carries the amount of the refund or dispute instead (possibly partial), which is not compared with anything.
REPORTS_PAYMENT_AMOUNT: Final = frozenset({WebhookOutcome.SUCCEEDED, WebhookOutcome.FAILED})


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One provider event. `event_id` is the provider's id (or a derived one) and is the deduplication key.

    `amount` (integer minor units) and `currency` (ISO 4217, upper case) are what the provider reports the payment
    to be, both or neither: set only for outcomes in REPORTS_PAYMENT_AMOUNT and only when the provider says
    (GoCardless events never do).

    `reversal` is what a REVERSED event says about the reversal itself (kind, amount, status, references), and is
    set only on REVERSED events. Stripe and Adyen set it on every REVERSED event; GoCardless and the sandbox report
    a reversal without its amount, so theirs carry None and the processor reads it as the whole payment reversed.
    """

    provider: str
    event_id: str
    event_type: str
    provider_reference: str | None
    outcome: WebhookOutcome
    failure_code: str | None = None
    occurred_at: datetime | None = None
    amount: int | None = None
    currency: str | None = None
    reversal: ReversalReport | None = None

    def __post_init__(self) -> None:
        # Parsers guarantee both; the inbox row's CHECK would refuse one without the other at commit.
        if (self.amount is None) != (self.currency is None):
            raise ValueError("a webhook event carries an amount together with its currency, or neither")
        # A refund's amount compared with the payment's would flag every partial refund as an amount mismatch.
        if self.amount is not None and self.outcome not in REPORTS_PAYMENT_AMOUNT:
            raise ValueError(f"a {self.outcome} event carries no payment amount; a reversal's is in its report")
        if self.reversal is not None and self.outcome is not WebhookOutcome.REVERSED:
            raise ValueError(f"a {self.outcome} event reports no reversal")


WebhookParser = Callable[[bytes], list[WebhookEvent]]
