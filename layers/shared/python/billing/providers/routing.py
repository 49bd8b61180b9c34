"""Which provider charges an execution: the instrument decides.

A vault instrument is charged by the first configured provider, in the rail's order of preference, that holds a
token for it (the vault provisions cards at every configured card provider; an instrument made from a Stripe.js
`pm_...` has a Stripe token). A bare provider token names its provider by its shape (`pm_...` is Stripe's). Rails
without a real provider, and instruments no configured provider holds a token for, keep the sandbox, which is how
the sandbox's magic tokens (tok_visa, iban_settles_paid, ...) keep working everywhere.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Final

from billing.domain.execution import ExecutionRequest, PaymentRail
from billing.instruments.model import is_instrument_id
from billing.rails.adapters import SANDBOX, default_provider_for

STRIPE: Final = "stripe"
ADYEN: Final = "adyen"

# Order of preference per rail. Cards: Stripe, then Adyen, then the sandbox. Debits have no real provider yet.
PREFERENCE: Final[Mapping[PaymentRail, tuple[str, ...]]] = MappingProxyType(
    {
        PaymentRail.CARD: (STRIPE, ADYEN, SANDBOX),
        PaymentRail.SEPA_DEBIT: (SANDBOX,),
        PaymentRail.ACH_DEBIT: (SANDBOX,),
    }
)

# Token shapes that name their provider: Stripe PaymentMethods (pm_...). Adyen's stored payment method ids are bare
# alphanumerics that say nothing, so they only ever arrive through a vault instrument.
_TOKEN_PREFIXES: Final = ((STRIPE, "pm_"),)


class ProviderRouter:
    """Chooses the provider of a new execution; `configured` are the providers this deployment can reach."""

    def __init__(self, configured: Collection[str]) -> None:
        self._configured = frozenset(configured)

    def provider_for(self, request: ExecutionRequest, held: Collection[str] = ()) -> str:
        """`held`: the providers holding a token for the request's vault instrument (read when it was checked)."""
        rail = request.payment_rail
        instrument = request.payment_instrument_id
        preference = [name for name in PREFERENCE[rail] if name in self._configured]
        if is_instrument_id(instrument):
            return next((name for name in preference if name in held), default_provider_for(rail))
        if instrument is not None:
            for name, prefix in _TOKEN_PREFIXES:
                if instrument.startswith(prefix) and name in preference:
                    return name
        return default_provider_for(rail)
