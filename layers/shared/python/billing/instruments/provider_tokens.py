"""Provider tokens an instrument is charged with, for the instruments that need no card number to get one.

A card saved through the vault gets its provider token from the vault (billing.vault.provisioning: only the vault
sees the number). An instrument created from a token a provider issued client-side (Stripe.js `pm_...`) already
has one for that provider; a SEPA debit gets its token when the provider takes the mandate. Until real providers
are integrated every charge goes to the sandbox, so each of these also gets a sandbox token that behaves like the
original would (docs/sandbox.md, "Payment instruments").
"""

# S105 flags "token" in constant names; these are names of tokens and attributes, never secrets.
# ruff: noqa: S105

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from billing.instruments.brands import CardBrand


@dataclass(frozen=True, slots=True)
class KnownPaymentMethod:
    """What Stripe says about one of its test payment methods, and how the sandbox charges it."""

    brand: CardBrand
    last4: str
    sandbox_token: str


# Stripe's test PaymentMethods (https://docs.stripe.com/testing): brand and last4 as Stripe reports them, and the
# sandbox token with the same outcome. A real integration would retrieve the PaymentMethod from Stripe instead.
STRIPE_TEST_PAYMENT_METHODS: Final = MappingProxyType(
    {
        "pm_card_visa": KnownPaymentMethod(CardBrand.VISA, "4242", "tok_visa"),
        "pm_card_mastercard": KnownPaymentMethod(CardBrand.MASTERCARD, "4444", "tok_visa"),
        "pm_card_amex": KnownPaymentMethod(CardBrand.AMEX, "8431", "tok_visa"),
        "pm_card_chargeDeclined": KnownPaymentMethod(CardBrand.VISA, "0002", "tok_decline"),
        "pm_card_chargeDeclinedInsufficientFunds": KnownPaymentMethod(CardBrand.VISA, "9995", "tok_insufficient_funds"),
        "pm_card_chargeDeclinedExpiredCard": KnownPaymentMethod(CardBrand.VISA, "0069", "tok_expired_card"),
        "pm_card_threeDSecure2Required": KnownPaymentMethod(CardBrand.VISA, "3220", "tok_3ds"),
    }
)

# The sandbox's test accounts for SEPA debits (valid IBANs; any other IBAN settles paid).
SANDBOX_TEST_IBANS: Final = MappingProxyType(
    {
        "DE89370400440532013000": "iban_settles_paid",
        "DE62370400440532013001": "iban_settles_failed",
        "DE35370400440532013002": "iban_account_closed",
    }
)
SANDBOX_DEFAULT_SEPA_TOKEN: Final = "iban_settles_paid"


def sandbox_token_for_payment_method(token: str) -> str:
    """The sandbox token charging a Stripe payment method: its test outcome, else the token itself (which the
    sandbox, like Stripe's test mode for an unknown card, charges successfully)."""
    known = STRIPE_TEST_PAYMENT_METHODS.get(token)
    return known.sandbox_token if known else token


def sandbox_token_for_iban(iban: str) -> str:
    """The sandbox token debiting a (normalised) IBAN."""
    return SANDBOX_TEST_IBANS.get(iban, SANDBOX_DEFAULT_SEPA_TOKEN)
