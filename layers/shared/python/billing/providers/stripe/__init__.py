"""Stripe behind the PaymentProvider port: PaymentIntents created and confirmed server-side, through the SDK.

provider.py        StripeProvider: the port's operations
clients.py         credentials, timeouts, one SDK client per API key, SDK logging kept free of secrets
server_profile.py  what a Stripe-compatible server supports (Stripe, localstripe)
params.py          what we send: PaymentIntent and Refund parameters, metadata
amounts.py         amounts in Stripe's units
statuses.py        PaymentIntent and Refund statuses as outcomes
three_ds.py        3-D Secure: what a charge asks of Stripe, and what Stripe reports of the authentication it ran
errors.py          Stripe's errors as ProviderErrors, and the decision table
lookup.py          finding a PaymentIntent or Refund whose answer was lost
"""

from billing.providers.stripe.clients import CredentialsSource, StripeCredentials, StripeTimeouts
from billing.providers.stripe.provider import PROVIDER_NAME, StripeProvider
from billing.providers.stripe.server_profile import LOCALSTRIPE, STRIPE, StripeServerProfile, profile_named

__all__ = [
    "LOCALSTRIPE",
    "PROVIDER_NAME",
    "STRIPE",
    "CredentialsSource",
    "StripeCredentials",
    "StripeProvider",
    "StripeServerProfile",
    "StripeTimeouts",
    "profile_named",
]
