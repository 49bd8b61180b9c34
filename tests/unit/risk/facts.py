"""RiskFacts for tests: a customer's first card attempt of the day, changed only where a test says so."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from billing.domain.execution import PaymentRail
from billing.domain.money import Money
from billing.rails.ports import ChargeInitiator
from billing.risk.attributes import RiskFacts

FIRST_ATTEMPT = RiskFacts(
    amount=Money(1000, "EUR"),
    rail=PaymentRail.CARD,
    initiator=ChargeInitiator.CUSTOMER,
    instrument_age_seconds=30 * 86400,
    first_charge_authenticated=True,
    issuer_country="DE",
    customer_country="DE",
    device_fingerprint_present=True,
    ip_address_present=True,
    attempts_per_instrument_1h=1,
    attempts_per_instrument_24h=1,
    declines_per_instrument_24h=0,
    attempts_per_customer_1h=1,
    amount_per_customer_24h=Money(1000, "EUR"),
    distinct_instruments_per_customer_24h=1,
    distinct_customers_per_instrument_24h=1,
    distinct_customers_per_device_24h=1,
    attempts_per_ip_1h=1,
    attempts_per_tenant_1m=1,
)


def make_facts(**changes: Any) -> RiskFacts:
    """FIRST_ATTEMPT with `changes`; a new amount moves amount_per_customer_24h along unless given too."""
    if "amount" in changes and "amount_per_customer_24h" not in changes:
        changes["amount_per_customer_24h"] = changes["amount"]
    return replace(FIRST_ATTEMPT, **changes)


def charge(amount: int, currency: str, **changes: Any) -> RiskFacts:
    return make_facts(amount=Money(amount, currency), **changes)
