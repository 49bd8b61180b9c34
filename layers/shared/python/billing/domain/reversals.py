"""Reversals: money going back on a completed execution, each with its own amount, status and provider reference.

A refund the engine requests (POST /executions/{id}/refunds) starts `requested`, becomes `pending` or final when
the provider answers, and final by webhook or reconciliation. A reversal the provider reports on its own (a
chargeback, a refund made in the provider's dashboard) is recorded as the provider states it. The execution row
never changes; its resource shows the refunded amount, summed from these rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, assert_never

from billing.domain.money import Money
from billing.domain.transitions import EVENT_PREFIX

# Lifecycle events of reversals (kind 'reversal': the execution stays completed, so no workflow row). A reversal the
# provider reports is `reversed`; a refund the engine requests is `refund_requested`, then `refund_pending`,
# `refunded` or `refund_failed` as it moves.
REVERSED_EVENT_TYPE: Final = EVENT_PREFIX + "reversed"
REFUND_REQUESTED_EVENT_TYPE: Final = EVENT_PREFIX + "refund_requested"
REFUND_PENDING_EVENT_TYPE: Final = EVENT_PREFIX + "refund_pending"
REFUNDED_EVENT_TYPE: Final = EVENT_PREFIX + "refunded"
REFUND_FAILED_EVENT_TYPE: Final = EVENT_PREFIX + "refund_failed"
REVERSAL_EVENT_TYPES: Final = frozenset(
    {REVERSED_EVENT_TYPE, REFUND_REQUESTED_EVENT_TYPE, REFUND_PENDING_EVENT_TYPE, REFUNDED_EVENT_TYPE,
     REFUND_FAILED_EVENT_TYPE}
)  # fmt: skip
# Annotation: a provider reported a success for an execution that had already failed or been canceled.
PAID_AFTER_FAILURE_EVENT_TYPE: Final = EVENT_PREFIX + "paid_after_failure"


class ReversalKind(StrEnum):
    """What kind of money movement a reversal is (the `kind` column)."""

    REFUND = "refund"
    # Adyen CANCEL_OR_REFUND: a cancel if the payment was not captured yet, a refund if it was.
    CANCEL_OR_REFUND = "cancel_or_refund"
    CHARGEBACK = "chargeback"
    SECOND_CHARGEBACK = "second_chargeback"
    # The merchant won the dispute: the chargeback's money comes back (a negative reversal).
    CHARGEBACK_REVERSED = "chargeback_reversed"
    # A refund returned by the issuer (closed account): the refunded money comes back to the merchant.
    REFUND_REVERSED = "refund_reversed"
    # Rows recorded before reversals carried a kind and an amount.
    UNSPECIFIED = "unspecified"


class ReversalStatus(StrEnum):
    REQUESTED = "requested"  # written before the provider was asked (ours only)
    PENDING = "pending"  # the provider accepted it; its final state comes later
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ReversalInitiator(StrEnum):
    MERCHANT = "merchant"  # requested through the engine's API
    PROVIDER = "provider"  # reported by the provider (dispute, dashboard refund)


# What a refund of ours can be reported as (Adyen answers a refund with REFUND, or CANCEL_OR_REFUND when that was
# sent), and what goes back to the customer as a refund.
REFUND_KINDS: Final = frozenset({ReversalKind.REFUND, ReversalKind.CANCEL_OR_REFUND})


def is_final(status: ReversalStatus) -> bool:
    match status:
        case ReversalStatus.SUCCEEDED | ReversalStatus.FAILED:
            return True
        case ReversalStatus.REQUESTED | ReversalStatus.PENDING:
            return False
        case _:
            assert_never(status)


@dataclass(frozen=True, slots=True)
class ReversalReport:
    """What a provider's webhook says about one reversal.

    `reference` is the provider's id of the reversal itself (Stripe re_... / dp_..., Adyen's pspReference of the
    modification or dispute); `our_reference` is our reversal id when the provider echoes it back (Adyen's
    merchantReference of a refund we requested, Stripe's refund metadata), which finds a refund whose answer was
    lost. `status` is as the provider reports it: a chargeback or a dashboard refund is SUCCEEDED when reported.
    """

    kind: ReversalKind
    money: Money
    status: ReversalStatus
    reference: str | None = None
    our_reference: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.status is ReversalStatus.REQUESTED:
            raise ValueError("a provider never reports a reversal as requested; that state is ours")
        if self.kind is ReversalKind.UNSPECIFIED:
            raise ValueError("a provider report names what kind of reversal it is")
