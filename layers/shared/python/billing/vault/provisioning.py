"""Provider tokens made from a card the vault holds: the card goes to the provider, its token comes back.

ProviderTokenizer is the port a PSP's tokenization endpoint implements (Stripe: create a PaymentMethod; Adyen:
store a payment method). The only adapter so far is the sandbox's, which, like Stripe's test mode, knows a few
test card numbers by outcome (docs/sandbox.md, "Payment instruments"): the sandbox then charges the token it
returns. The security code would travel to a provider here, for the first authorisation, if one required it; none
does yet, so it is checked for shape and dropped (PCI DSS 3.3.1: never stored after authorisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from billing.instruments.brands import CardBrand


@dataclass(frozen=True, slots=True)
class CardForProvider:
    """What a provider's tokenization takes; only ever built inside the vault."""

    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    brand: CardBrand
    holder_name: str | None = None
    # Travels to the provider with the number when the customer gave one (its CVC check), then is gone: never stored.
    security_code: str | None = field(default=None, repr=False)


class ProviderTokenizer(Protocol):
    @property
    def provider(self) -> str:
        """The provider the token is for (payment_provider of the executions charging it)."""
        ...

    def tokenize(self, card: CardForProvider) -> str | None:
        """The provider's token for the card; None if this provider cannot hold this card (the card is then charged
        through another provider)."""
        ...


# Stripe's test card numbers by outcome, mapped to the sandbox token with the same outcome.
SANDBOX_TEST_CARDS: Final = MappingProxyType(
    {
        "4242424242424242": "tok_visa",
        "4000000000000002": "tok_decline",
        "4000000000009995": "tok_insufficient_funds",
        "4000000000000069": "tok_expired_card",
        "4000000000003220": "tok_3ds",
        # 3-D Secure test cards (billing.authentication.flow.SANDBOX_3DS_CARDS): the sandbox's ACS knows them.
        "4000002760003184": "tok_3ds_challenge",
        "4000000000003063": "tok_3ds_attempted",
        "4000008400001629": "tok_3ds_rejected",
        "4000000000003055": "tok_3ds_unavailable",
        "5200828282828210": "tok_3ds_mastercard",
    }
)


class SandboxCardTokenizer:
    """The sandbox provider's tokenization: a test number gets its outcome's token, any other card succeeds."""

    @property
    def provider(self) -> str:
        return "sandbox"

    def tokenize(self, card: CardForProvider) -> str:
        return SANDBOX_TEST_CARDS.get(card.number, f"tok_{card.brand.value}")
