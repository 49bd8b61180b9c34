"""Rail adapters: what each payment rail means (sync or async, how many retries) on top of any provider.

card settles at submit; sepa_debit and ach_debit are accepted at submit and settle days later, so a provider's
"success" on those rails means "pending settlement" and never "paid".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import assert_never

from billing.domain.errors import AdapterMismatch, UnknownPaymentProvider
from billing.domain.execution import Execution, PaymentRail
from billing.rails.ports import PaymentProvider, ProviderCharge, RailAdapter, provider_idempotency_key
from billing.rails.results import Decision, ProviderError, StatusCheck, SubmitOutcome, SubmitResult
from billing.rails.three_ds import NO_THREE_DS, ThreeDSecureInstruction

SANDBOX = "sandbox"


@dataclass(frozen=True, slots=True)
class RailProfile:
    """How a rail behaves, independent of which provider carries it."""

    rail: PaymentRail
    is_async: bool
    max_retries: int


def rail_profile(rail: PaymentRail) -> RailProfile:
    """The profile of a rail; exhaustive, so a new rail cannot ship without one."""
    match rail:
        case PaymentRail.CARD:
            # Few retries: issuers and card schemes penalise repeated attempts on the same card (velocity and
            # fraud checks, scheme retry limits), and a card decision is needed within the customer's session.
            return RailProfile(rail, is_async=False, max_retries=3)
        case PaymentRail.SEPA_DEBIT | PaymentRail.ACH_DEBIT:
            # Submitting a debit only lodges it with the provider; transient failures there cost nothing
            # at the bank and the collection date is days away, so retrying longer is cheap and safe.
            return RailProfile(rail, is_async=True, max_retries=5)
        case _:
            assert_never(rail)


MAX_RETRIES_BY_RAIL: Mapping[PaymentRail, int] = MappingProxyType(
    {rail: rail_profile(rail).max_retries for rail in PaymentRail}
)


def default_provider_for(rail: PaymentRail) -> str:
    """The provider new executions on this rail are routed to."""
    match rail:
        case PaymentRail.CARD | PaymentRail.SEPA_DEBIT | PaymentRail.ACH_DEBIT:
            # One provider until real PSPs are integrated; routing per rail is the seam for adding them.
            return SANDBOX
        case _:
            assert_never(rail)


def apply_rail_semantics(result: SubmitResult, *, is_async: bool) -> SubmitResult:
    """Read a provider's answer the way the rail demands: an async rail is never paid at submit."""
    if is_async and result.outcome is SubmitOutcome.SUCCEEDED:
        # A provider reporting a debit as succeeded at submit only means it accepted it; the bank can still
        # return it (R01, AM04, ...) days later, so completing the execution now would be premature.
        return dataclasses.replace(result, outcome=SubmitOutcome.PENDING_SETTLEMENT)
    # A sync rail answered "pending" (some card providers report "processing") stays pending: reconciliation
    # will learn the outcome, guessing "paid" would not.
    return result


class ProviderRailAdapter:
    """A rail carried by one provider; implements the RailAdapter port."""

    def __init__(self, profile: RailProfile, provider: PaymentProvider) -> None:
        self._profile = profile
        self._provider = provider

    @property
    def rail(self) -> PaymentRail:
        return self._profile.rail

    @property
    def provider_name(self) -> str:
        return self._provider.name

    @property
    def is_async(self) -> bool:
        return self._profile.is_async

    @property
    def max_retries(self) -> int:
        return self._profile.max_retries

    def submit(self, execution: Execution, three_ds: ThreeDSecureInstruction = NO_THREE_DS) -> SubmitResult:
        """Submit the execution's charge under its provider idempotency key."""
        self._require_own(execution)
        charge = ProviderCharge.from_execution(execution, three_ds)
        result = self._provider.submit(charge, provider_idempotency_key(execution))
        return apply_rail_semantics(result, is_async=self.is_async)

    def check_status(self, execution: Execution) -> StatusCheck:
        """Ask by reference when one was recorded, else by key (a submit that timed out before answering)."""
        self._require_own(execution)
        if execution.provider_reference is not None:
            return self._provider.check_status(provider_reference=execution.provider_reference)
        return self._provider.check_status(idempotency_key=provider_idempotency_key(execution))

    def is_retryable(self, error: ProviderError) -> bool:
        return self.decision_for(error) is Decision.RETRY

    def decision_for(self, error: ProviderError) -> Decision:
        return self._provider.decision_for(error.code)

    def _require_own(self, execution: Execution) -> None:
        # Asking the wrong provider about a charge would report it missing and invite a second charge elsewhere.
        if execution.payment_rail is not self.rail or execution.payment_provider != self.provider_name:
            raise AdapterMismatch(
                f"execution {execution.id} is {execution.payment_rail}/{execution.payment_provider}, "
                f"this adapter is {self.rail}/{self.provider_name}",
                execution_id=str(execution.id),
            )


def build_rail_adapter(rail: PaymentRail, provider: PaymentProvider) -> RailAdapter:
    """The adapter for a rail carried by the given provider."""
    return ProviderRailAdapter(rail_profile(rail), provider)


def adapter_for(execution: Execution, providers: Mapping[str, PaymentProvider]) -> RailAdapter:
    """The adapter for the rail and provider an execution was created with."""
    provider = providers.get(execution.payment_provider)
    if provider is None:
        raise UnknownPaymentProvider(
            f"execution {execution.id} names provider {execution.payment_provider!r}, which is not configured",
            provider=execution.payment_provider,
        )
    return build_rail_adapter(execution.payment_rail, provider.for_tenant(execution.tenant_id))
