"""Risk facts hold one value per named attribute, and refuse counts the counting query cannot have produced."""

from __future__ import annotations

from typing import Any

import pytest

from billing.domain.money import Money
from billing.risk.attributes import ATTRIBUTE_SPECS, Attribute, AttributeType, RiskFacts
from tests.unit.risk.facts import FIRST_ATTEMPT, make_facts


def test_every_attribute_has_a_spec_and_a_value_of_its_type() -> None:
    python_types: dict[AttributeType, tuple[type, ...]] = {
        AttributeType.MONEY: (Money,),
        AttributeType.INTEGER: (int,),
        AttributeType.BOOLEAN: (bool,),
        AttributeType.ENUM: (str,),
        AttributeType.COUNTRY: (str,),
    }
    assert set(ATTRIBUTE_SPECS) == set(Attribute)
    for attribute, spec in ATTRIBUTE_SPECS.items():
        assert isinstance(FIRST_ATTEMPT.value(attribute), python_types[spec.type]), attribute


@pytest.mark.parametrize(
    ("issuer", "customer", "differs"),
    [("DE", "DE", False), ("US", "DE", True), (None, "DE", None), ("US", None, None)],
)
def test_issuer_country_differs_only_when_both_countries_are_known(
    issuer: str | None, customer: str | None, differs: bool | None
) -> None:
    facts = make_facts(issuer_country=issuer, customer_country=customer)
    assert facts.value(Attribute.ISSUER_COUNTRY_DIFFERS) is differs


def test_as_json_renders_money_as_integer_minor_units_and_currency() -> None:
    rendered = make_facts(amount=Money(4500, "JPY")).as_json()
    assert rendered["amount"] == {"amount": 4500, "currency": "JPY"}
    assert rendered["amount_per_customer_24h"] == {"amount": 4500, "currency": "JPY"}
    assert rendered["rail"] == "card"
    assert rendered["issuer_country_differs"] is False
    assert set(rendered) == {attribute.value for attribute in Attribute}


@pytest.mark.parametrize(
    "changes",
    [
        # The counters include the current attempt: 0 means the query forgot it.
        {"attempts_per_instrument_1h": 0},
        {"attempts_per_tenant_1m": 0},
        {"distinct_instruments_per_customer_24h": 0},
        {"distinct_customers_per_device_24h": 0},
        {"declines_per_instrument_24h": -1},
        {"instrument_age_seconds": -5},
        {"attempts_per_customer_1h": True},
        {"attempts_per_customer_1h": 2.0},
        {"first_charge_authenticated": 1},
        {"issuer_country": "de"},
        {"customer_country": "DEU"},
        {"rail": "card"},
        {"amount": Money(0, "EUR")},
        {"amount": 1000},
        {"amount_per_customer_24h": Money(999, "EUR")},
        {"amount_per_customer_24h": Money(5000, "USD")},
        {"device_fingerprint_present": False},
        {"device_fingerprint_present": False, "distinct_customers_per_device_24h": None, "attempts_per_ip_1h": None},
        {"ip_address_present": True, "attempts_per_ip_1h": None},
    ],
)
def test_inconsistent_facts_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="inconsistent risk facts"):
        make_facts(**changes)


def test_facts_without_device_or_ip_leave_their_counters_unknown() -> None:
    facts = make_facts(
        device_fingerprint_present=False,
        distinct_customers_per_device_24h=None,
        ip_address_present=False,
        attempts_per_ip_1h=None,
        instrument_age_seconds=None,
        first_charge_authenticated=None,
    )
    assert isinstance(facts, RiskFacts)
    assert facts.value(Attribute.DISTINCT_CUSTOMERS_PER_DEVICE_24H) is None
    assert facts.value(Attribute.ATTEMPTS_PER_IP_1H) is None
