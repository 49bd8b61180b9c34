"""Stripe's tokenization of a card the vault holds: a PaymentMethod created server-side from the card number.

Only the vault function does this (it alone ever holds a card number, inside the cardholder data environment); what
comes back is the `pm_...` the Stripe provider charges. The security code is not sent: no first authorisation
happens here, and it is never kept (PCI DSS 3.3.1).
"""

from __future__ import annotations

from typing import Any, Final

import stripe

from billing.domain.errors import ProviderUnavailable
from billing.providers.stripe.clients import (
    CredentialsSource,
    StripeClients,
    StripeTimeouts,
    silence_sdk_debug_logging,
)
from billing.providers.stripe.server_profile import STRIPE, StripeServerProfile
from billing.vault.provisioning import CardForProvider

PROVIDER: Final = "stripe"


class StripeCardTokenizer:
    """Implements billing.vault.provisioning.ProviderTokenizer for Stripe (the platform account's PaymentMethods)."""

    def __init__(
        self,
        credentials: CredentialsSource,
        *,
        api_base: str | None = None,
        profile: StripeServerProfile = STRIPE,
        timeouts: StripeTimeouts | None = None,
    ) -> None:
        silence_sdk_debug_logging()
        self._credentials = credentials
        self._profile = profile
        self._clients = StripeClients(api_base=api_base, timeouts=timeouts or StripeTimeouts())

    @property
    def provider(self) -> str:
        return PROVIDER

    def tokenize(self, card: CardForProvider) -> str | None:
        """The PaymentMethod id for the card, None for a card this server cannot take (the emulator's limits);
        ProviderUnavailable (nothing saved) when Stripe did not make one."""
        if not self._profile.can_tokenize(card.number, card.security_code):
            return None
        details: dict[str, Any] = {"number": card.number, "exp_month": card.exp_month, "exp_year": card.exp_year}
        if card.security_code is not None:
            details["cvc"] = card.security_code
        params: Any = {"type": "card", "card": details}
        if card.holder_name:
            params["billing_details"] = {"name": card.holder_name}
        try:
            method = self._clients.client_for(self._credentials(None)).v1.payment_methods.create(params=params)
        except stripe.StripeError as exc:
            # Never the SDK's message: it may quote the request. The type and Stripe's code say what went wrong.
            raise ProviderUnavailable(
                f"Stripe did not tokenize the card: {type(exc).__name__} {exc.code or ''}".strip(), provider=PROVIDER
            ) from None
        return str(method.id)
