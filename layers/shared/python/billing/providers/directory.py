"""The providers a function can charge through, built once per container from its environment.

The sandbox is always there (local runs, tests, and the rails no real provider carries yet). Stripe is there when
the function was given its credentials secret (STRIPE_CREDENTIALS_SECRET_ID); STRIPE_API_BASE points it at any
Stripe-compatible server (localstripe locally) and STRIPE_SERVER_PROFILE says what that server supports. Adyen is
there when it was given ADYEN_CREDENTIALS_SECRET_ID and a PROVIDER_RETURN_URL (Adyen takes a returnUrl on every
payment). Every provider charges vault instruments by its own token for them (InstrumentTokenProvider), looked up on
connections of the function's own database role, never inside the engine's transactions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from billing.db.connection_provider import database_url_from_environment
from billing.db.roles import DatabaseRole
from billing.instruments.charging import InstrumentTokenProvider, ProviderTokenLookup
from billing.providers.credentials import adyen_credentials, stripe_credentials
from billing.providers.routing import ADYEN, STRIPE
from billing.rails.adapters import SANDBOX
from billing.rails.ports import PaymentProvider
from billing.rails.sandbox import KeptConnections, SandboxProvider
from billing.resource_names import ENV_PROVIDER_CREDENTIAL_SECRET_IDS, ENV_PROVIDER_RETURN_URL

ENV_STRIPE_SECRET_ID: Final = ENV_PROVIDER_CREDENTIAL_SECRET_IDS[STRIPE]
ENV_STRIPE_API_BASE: Final = "STRIPE_API_BASE"
ENV_STRIPE_SERVER_PROFILE: Final = "STRIPE_SERVER_PROFILE"
ENV_ADYEN_SECRET_ID: Final = ENV_PROVIDER_CREDENTIAL_SECRET_IDS[ADYEN]
ENV_ADYEN_ENVIRONMENT: Final = "ADYEN_ENVIRONMENT"
ENV_ADYEN_LIVE_ENDPOINT_PREFIX: Final = "ADYEN_LIVE_ENDPOINT_PREFIX"
ENV_ADYEN_API_BASE: Final = "ADYEN_API_BASE"


def configured_providers(role: DatabaseRole, environ: Mapping[str, str] | None = None) -> dict[str, PaymentProvider]:
    """The payment providers a function connecting as `role` can reach, by name (payment_provider)."""
    env = os.environ if environ is None else environ
    # The sandbox is an external system: it gets its own connection, never the billing transaction; kept while the
    # container is warm, as a provider's HTTP connection would be.
    connections = KeptConnections(database_url_from_environment(role=role))
    tokens = ProviderTokenLookup(connections)
    providers: dict[str, PaymentProvider] = {SANDBOX: InstrumentTokenProvider(SandboxProvider(connections), tokens)}
    return_url = env.get(ENV_PROVIDER_RETURN_URL) or None
    if env.get(ENV_STRIPE_SECRET_ID):
        # Deferred: the SDK costs cold start, and only functions given Stripe's credentials need it.
        from billing.providers.stripe.provider import StripeProvider
        from billing.providers.stripe.server_profile import profile_named

        stripe = StripeProvider(
            stripe_credentials(env[ENV_STRIPE_SECRET_ID]).for_tenant,
            api_base=env.get(ENV_STRIPE_API_BASE) or None,
            profile=profile_named(env.get(ENV_STRIPE_SERVER_PROFILE) or "stripe"),
            return_url=return_url,
        )
        providers[STRIPE] = InstrumentTokenProvider(stripe, tokens)
    if env.get(ENV_ADYEN_SECRET_ID) and return_url:
        from billing.providers.adyen.provider import AdyenProvider

        adyen = AdyenProvider(
            adyen_credentials(env[ENV_ADYEN_SECRET_ID]).for_tenant,
            return_url=return_url,
            environment=env.get(ENV_ADYEN_ENVIRONMENT) or "test",
            live_endpoint_prefix=env.get(ENV_ADYEN_LIVE_ENDPOINT_PREFIX) or None,
            api_base=env.get(ENV_ADYEN_API_BASE) or None,
        )
        providers[ADYEN] = InstrumentTokenProvider(adyen, tokens)
    return providers
