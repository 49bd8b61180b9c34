"""Adyen behind the PaymentProvider port: Checkout API v71 through Adyen's official Python SDK.

One module per concept: `endpoints` (the pinned API version and base URLs), `credentials`, `idempotency` (the
Idempotency-Key Adyen gets), `request_bodies` (what /payments, /refunds and /cancels are sent), `three_ds` (what
3-D Secure adds to /payments, and what Adyen reports of it), `result_codes` (the spec's resultCode enum, decided one
by one), `responses` (Adyen's answers as SubmitResult / RefundResult), `errors` (HTTP and transport failures, and
the decision table) and `provider` (AdyenProvider, which sends). docs/providers.md explains how charges are followed
afterwards: Adyen has no payment status endpoint.
"""

from billing.providers.adyen.credentials import AdyenCredentials, parse_adyen_credentials
from billing.providers.adyen.endpoints import CHECKOUT_API_VERSION, AdyenEnvironment
from billing.providers.adyen.provider import PROVIDER_NAME, AdyenProvider

__all__ = [
    "CHECKOUT_API_VERSION",
    "PROVIDER_NAME",
    "AdyenCredentials",
    "AdyenEnvironment",
    "AdyenProvider",
    "parse_adyen_credentials",
]
