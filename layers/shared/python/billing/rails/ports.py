"""The two ports of the payment layer: a provider (who moves the money) and a rail adapter (how a rail behaves).

Services depend on these Protocols only; concrete providers (the sandbox, later real PSPs) are wired in a
build_...() factory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from billing.domain.execution import Execution, PaymentRail
from billing.rails.results import Decision, ProviderError, RefundResult, StatusCheck, SubmitResult
from billing.rails.three_ds import NO_THREE_DS, ThreeDSecureInstruction


class ChargeInitiator(StrEnum):
    """Who starts a charge: the customer in a session (3-D Secure possible), or the merchant without them (a renewal
    on a stored card: off_session at Stripe, ContAuth / Subscription at Adyen)."""

    CUSTOMER = "customer"
    MERCHANT = "merchant"


# Execution metadata key that marks a merchant-initiated charge (issue 12 turns it into a column of its own).
INITIATOR_METADATA_KEY = "initiator"


@dataclass(frozen=True, slots=True)
class ProviderCharge:
    """The minimum a provider needs to charge: who, how much, over which rail, from which instrument."""

    tenant_id: UUID
    execution_id: UUID
    amount: int
    currency: str
    rail: PaymentRail
    payment_instrument_id: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # 1 for the first submission; above 1 a charge may already exist under the key (an earlier answer was lost), so a
    # provider that cannot rely on its server honouring idempotency keys looks for it before creating another.
    attempt: int = 1
    initiator: ChargeInitiator = ChargeInitiator.CUSTOMER
    # When the execution was created: a lower bound for the charge's creation time at the provider (list filters).
    created_at: datetime | None = None
    # The customer, as the billing system knows them (the entity contract): Adyen's shopperReference for stored cards.
    customer_reference: str | None = None
    # What the risk decision asks of 3-D Secure for this charge (billing.rails.three_ds).
    three_ds: ThreeDSecureInstruction = NO_THREE_DS

    def __post_init__(self) -> None:
        # bool is an int subclass; a float would be a rounding bug waiting to happen. Minor units only.
        if type(self.amount) is not int or self.amount <= 0:
            raise ValueError("amount must be a positive int of minor units")

    @classmethod
    def from_execution(cls, execution: Execution, three_ds: ThreeDSecureInstruction = NO_THREE_DS) -> ProviderCharge:
        """The charge an execution stands for."""
        return cls(
            three_ds=three_ds,
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            amount=execution.amount,
            currency=execution.currency,
            rail=execution.payment_rail,
            payment_instrument_id=execution.payment_instrument_id,
            metadata=dict(execution.metadata),
            attempt=max(execution.attempt_count, 1),
            initiator=ChargeInitiator(execution.metadata.get(INITIATOR_METADATA_KEY, ChargeInitiator.CUSTOMER.value)),
            created_at=execution.created_at,
            customer_reference=execution.entity_contract_id,
        )


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    """Money to send back on a captured charge: which charge (the provider's reference), how much, and why.

    `refund_id` is ours (the reversal row's id); providers carry it in their metadata / merchant reference, which is
    what finds a refund whose answer was lost.
    """

    tenant_id: UUID
    execution_id: UUID
    refund_id: UUID
    payment_reference: str
    amount: int
    currency: str
    reason: str | None = None

    def __post_init__(self) -> None:
        if type(self.amount) is not int or self.amount <= 0:
            raise ValueError("amount must be a positive int of minor units")
        if not self.payment_reference:
            raise ValueError("a refund needs the provider reference of the charge it refunds")


def provider_refund_key(refund: ProviderRefund) -> str:
    """The idempotency key of a refund request, the same on every attempt: one refund per reversal row."""
    return f"{refund.tenant_id}:{refund.execution_id}:refund:{refund.refund_id}"


def provider_idempotency_key(execution: Execution) -> str:
    """The idempotency key every provider call for this execution carries, first attempt and every retry alike.

    Derived from the execution rather than passed through from the client: the client's key is unique per tenant
    only, while all tenants share one provider account, so two tenants' "order-1" must not collide there. The
    execution exists exactly once per (tenant, client key), so this key is just as stable and never changes
    between retries, which is what stops a resubmission after a timeout from charging twice.
    """
    return f"{execution.tenant_id}:{execution.id}"


def provider_cancel_key(execution: Execution) -> str:
    """The idempotency key of the request cancelling this execution's charge, the same on every attempt.

    Not the charge's own key: providers key requests, not charges, and refuse (or replay the charge's answer to) a
    key sent again with another request. Derived from the execution like the charge's key, so a cancel sent again
    after a worker died is de-duplicated by the provider.
    """
    return f"{provider_idempotency_key(execution)}:cancel"


class PaymentProvider(Protocol):
    """A payment service provider.

    submit reports provider trouble as a result (TRANSIENT_ERROR, UNKNOWN), never by raising. check_status and cancel
    raise ProviderUnavailable when they could not ask, and never turn "no answer" into NOT_FOUND.
    """

    @property
    def name(self) -> str:
        """Stable provider name, as stored in billing_executions.payment_provider."""
        ...

    def submit(self, charge: ProviderCharge, idempotency_key: str) -> SubmitResult:
        """Charge once per idempotency key; a repeated key returns the original result and never charges again."""
        ...

    def check_status(self, *, provider_reference: str | None = None, idempotency_key: str | None = None) -> StatusCheck:
        """The charge's current state, found by exactly one of reference or key.

        Lookup by key recovers a charge whose submit timed out before the reference came back.
        """
        ...

    def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
        """Cancel a charge still waiting for the customer (3-D Secure, a redirect); the charge's state afterwards.

        CANCELED: canceled, by this request or an earlier one; no money moves, ever. A charge that reached its
        outcome first is left as it is and reported as it stands: PAID when the customer finished at the last second
        (the cancel lost and the payment stands), FAILED, or STILL_PENDING when it is on its way and can no longer
        be canceled. NOT_FOUND for a reference the provider does not know. Raises ProviderUnavailable when it could
        not ask: then nobody knows whether the cancel took effect, and the next check_status tells.
        """
        ...

    def decision_for(self, error_code: str) -> Decision:
        """This provider's error-code table: retry, fail, or reconcile later (codes unknown to it: reconcile)."""
        ...

    def for_tenant(self, tenant_id: UUID) -> PaymentProvider:
        """This provider as `tenant_id`'s account at it sees things: the tenant's own credentials when it has an
        override, else the platform account's. A provider without accounts (the sandbox) returns itself. Charges are
        only ever looked up through the account that made them; another account would report them missing."""
        ...

    @property
    def polls_status(self) -> bool:
        """True if check_status and check_refund can ask this provider. False for a provider without a status
        endpoint (Adyen): its charges and refunds are followed by webhooks, then by its settlement report, and the
        reconciliation worker does not ask it (both methods raise StatusNotPollable)."""
        ...

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        """Refund (part of) a captured charge once per idempotency key. Provider trouble comes back as a result
        (TRANSIENT_ERROR, UNKNOWN), never by raising."""
        ...

    def check_refund(self, refund: ProviderRefund, *, refund_reference: str | None) -> RefundResult:
        """The refund's current state: by the provider's reference when known, else found by `refund.refund_id`
        (a refund whose answer was lost). NOT_FOUND: no such refund was made. Raises ProviderUnavailable when it
        could not ask."""
        ...


class RailAdapter(Protocol):
    """One payment rail bound to the provider that carries it."""

    @property
    def rail(self) -> PaymentRail: ...

    @property
    def provider_name(self) -> str: ...

    @property
    def is_async(self) -> bool:
        """True if an accepted charge settles later (SEPA, ACH) rather than at submit (card)."""
        ...

    @property
    def max_retries(self) -> int:
        """Resubmissions allowed after the first attempt for transient errors."""
        ...

    def submit(self, execution: Execution, three_ds: ThreeDSecureInstruction = NO_THREE_DS) -> SubmitResult:
        """Submit the execution's charge under its provider idempotency key, with what 3-D Secure asks of it."""
        ...

    def check_status(self, execution: Execution) -> StatusCheck:
        """Ask the provider about the execution's charge: by reference if known, else by idempotency key."""
        ...

    def is_retryable(self, error: ProviderError) -> bool:
        """True if the provider's decision table says to resubmit after this error."""
        ...

    def decision_for(self, error: ProviderError) -> Decision:
        """The provider's decision for this error's code."""
        ...
