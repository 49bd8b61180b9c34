"""What StripeProvider.submit costs per charge over the bare SDK call it wraps, against one localstripe.

Both sides create and confirm a PaymentIntent with the same parameters (params.payment_intent_params), the same
SDK client settings (no SDK retries, RequestsClient with the provider's timeouts) and an idempotency key each,
against the same server. They are interleaved charge by charge in ABBA order (adapter, bare, bare, adapter, ...), so
localstripe's growing store (it pickles all of it after every write, so each request is slower than the last) and
any other drift weigh on both alike. The adapter's figure includes building the
parameters and metadata and mapping the answer to a SubmitResult; the bare figure is the SDK call alone.

    .venv/bin/python bench/stripe_adapter_overhead.py
    BENCH_CHARGES=1000 .venv/bin/python bench/stripe_adapter_overhead.py
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import stripe

from billing.domain.execution import PaymentRail
from billing.local.localstripe import start_localstripe
from billing.providers.stripe import LOCALSTRIPE, StripeCredentials, StripeProvider, StripeTimeouts
from billing.providers.stripe.params import payment_intent_params
from billing.rails.ports import ProviderCharge
from billing.rails.results import SubmitOutcome

CHARGES = int(os.environ.get("BENCH_CHARGES", "200"))
WARM_UP = 10
API_KEY = "sk_test_bench"
TIMEOUTS = StripeTimeouts()


def new_charge(payment_method: str) -> ProviderCharge:
    return ProviderCharge(
        tenant_id=uuid4(),
        execution_id=uuid4(),
        amount=1999,
        currency="EUR",
        rail=PaymentRail.CARD,
        payment_instrument_id=payment_method,
        metadata={"invoice": "INV-BENCH"},
        created_at=datetime.now(UTC),
    )


def key_of(charge: ProviderCharge) -> str:
    return f"{charge.tenant_id}:{charge.execution_id}"


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    with start_localstripe() as server:
        provider = StripeProvider(
            lambda _tenant: StripeCredentials(API_KEY), api_base=server.api_base, profile=LOCALSTRIPE, timeouts=TIMEOUTS
        )
        bare = stripe.StripeClient(
            API_KEY,
            base_addresses={"api": server.api_base},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=(TIMEOUTS.connect, TIMEOUTS.read)),
        )
        card: Any = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
        payment_method = str(bare.v1.payment_methods.create(params={"type": "card", "card": card}).id)

        def through_adapter() -> float:
            charge = new_charge(payment_method)
            key = key_of(charge)

            def submit() -> None:
                result = provider.submit(charge, key)
                assert result.outcome is SubmitOutcome.SUCCEEDED, result

            return timed(submit)

        def through_sdk() -> float:
            charge = new_charge(payment_method)
            params = payment_intent_params(charge, profile=LOCALSTRIPE, return_url=None)
            key = key_of(charge)
            return timed(lambda: bare.v1.payment_intents.create(params=params, options={"idempotency_key": key}))

        for _ in range(WARM_UP):
            through_adapter()
            through_sdk()
        adapter: list[float] = []
        sdk: list[float] = []
        for n in range(CHARGES):
            if n % 2 == 0:
                adapter.append(through_adapter())
                sdk.append(through_sdk())
            else:
                sdk.append(through_sdk())
                adapter.append(through_adapter())
        report(adapter, sdk)


def report(adapter: list[float], sdk: list[float]) -> None:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:7.3f} ms"

    adapter_mean, sdk_mean = statistics.fmean(adapter), statistics.fmean(sdk)
    adapter_p50, sdk_p50 = statistics.median(adapter), statistics.median(sdk)
    print(f"Stripe create+confirm, {len(adapter)} charges per side against localstripe, interleaved ABBA")
    print(f"  StripeProvider.submit       mean {ms(adapter_mean)}   p50 {ms(adapter_p50)}")
    print(f"  bare SDK create (baseline)  mean {ms(sdk_mean)}   p50 {ms(sdk_p50)}")
    print(f"  adapter overhead per charge mean {ms(adapter_mean - sdk_mean)}   p50 {ms(adapter_p50 - sdk_p50)}")
    print(f"  ratio adapter/bare          mean {adapter_mean / sdk_mean:7.3f}      p50 {adapter_p50 / sdk_p50:7.3f}")


if __name__ == "__main__":
    main()
