"""Amounts as Stripe's API counts them: integers of the currency's minor unit, with Stripe's own exponents.

Stripe's exponent is ISO 4217's (billing.domain.money) except where Stripe kept an older one for backwards
compatibility: ISK is zero-decimal in ISO 4217 but two-decimal in Stripe's API (`100` is one krona, and amounts
must be multiples of 100), see https://docs.stripe.com/currencies#special-cases. Conversion is exact in both
directions; an amount Stripe reports that is not a whole number of our minor units is refused, never rounded.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from billing.domain.money import currency_exponent

# Currencies whose exponent in Stripe's API differs from ISO 4217's.
STRIPE_EXPONENT_OVERRIDES: Final = MappingProxyType({"ISK": 2})


def stripe_exponent(currency: str) -> int:
    """Decimal places of `currency` in Stripe's amounts."""
    code = currency.upper()
    return STRIPE_EXPONENT_OVERRIDES.get(code, currency_exponent(code))


def to_stripe_amount(amount: int, currency: str) -> int:
    """Our minor units (ISO 4217) as Stripe's amount."""
    shift = stripe_exponent(currency) - currency_exponent(currency.upper())
    if shift < 0:
        # No currency has fewer decimals at Stripe than in ISO 4217; dividing would lose money.
        raise ValueError(f"Stripe counts {currency} in larger units than ISO 4217")
    scale: int = 10**shift
    return amount * scale


def from_stripe_amount(amount: int, currency: str) -> int:
    """Stripe's amount as our minor units; refuses an amount that is not whole in them."""
    scale: int = 10 ** (stripe_exponent(currency) - currency_exponent(currency.upper()))
    whole, remainder = divmod(amount, scale)
    if remainder:
        raise ValueError(f"Stripe amount {amount} {currency} is not a whole number of ISO 4217 minor units")
    return whole


def stripe_currency(currency: str) -> str:
    """The currency code as Stripe wants it: lower case."""
    return currency.lower()
