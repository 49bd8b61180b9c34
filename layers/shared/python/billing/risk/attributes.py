"""What a risk rule can test: a closed set of named attributes, their types, and their values for one assessment.

Counters are counted by the caller over billing.risk_attempts: one row per execution, inserted at its first
assessment (recorded_at on the database's clock), before the counting in the same transaction; a resubmission of
the same execution adds no row. Every counter obeys these rules unless its own definition says otherwise:

- Scope: the tenant's rows only, and the key named (instrument_key, customer_key, device_key, ip_key) equal to the
  current attempt's.
- Window: a counter suffixed _1m, _1h or _24h covers rows with recorded_at > now() - 1 minute / 1 hour / 24 hours,
  now() being the counting transaction's clock.
- This attempt included: the current execution's own row counts exactly once, inside the window or not (a
  resubmission's row is as old as the execution's first assessment), so the first attempt ever reads 1 and "the
  6th attempt within an hour" reads attempts_per_instrument_1h >= 6.
- Every row counts whatever became of it: blocked, under review, declined, pending or paid; of either initiator
  (merchant-initiated renewals are not subject to the customer-initiated rules by default, but they count toward
  the numbers) and on any rail.

A value the caller cannot know is None (no device fingerprint was sent, a provider's token has no vault record to
date): a comparison with it is unknown, and an unknown condition never fires a rule (see billing.risk.evaluation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, assert_never

from billing.domain.execution import PaymentRail
from billing.domain.money import Money
from billing.rails.ports import ChargeInitiator

COUNTRY_PATTERN: Final = re.compile(r"^[A-Z]{2}$")


class Attribute(StrEnum):
    """A name a rule's condition can test. Closed: a rule naming anything else is refused when it is stored."""

    AMOUNT = "amount"
    RAIL = "rail"
    INITIATOR = "initiator"
    # Seconds since the vault instrument was created; None for a provider's token (no vault record to date).
    INSTRUMENT_AGE_SECONDS = "instrument_age_seconds"
    # True when the instrument's first completed charge was authenticated with 3-D Secure; False when it was not or
    # nothing was charged on it yet; None when nobody can tell (a provider's token).
    FIRST_CHARGE_AUTHENTICATED = "first_charge_authenticated"
    # ISO 3166-1 alpha-2 of the card's issuer (the IIN table), and of the customer (their billing address).
    ISSUER_COUNTRY = "issuer_country"
    CUSTOMER_COUNTRY = "customer_country"
    # Derived, never supplied: true when both countries above are known and differ, unknown when either is not.
    ISSUER_COUNTRY_DIFFERS = "issuer_country_differs"
    DEVICE_FINGERPRINT_PRESENT = "device_fingerprint_present"
    IP_ADDRESS_PRESENT = "ip_address_present"
    # Velocity counters: see the module docstring for what every counter shares, RiskFacts for each one's key.
    ATTEMPTS_PER_INSTRUMENT_1H = "attempts_per_instrument_1h"
    ATTEMPTS_PER_INSTRUMENT_24H = "attempts_per_instrument_24h"
    DECLINES_PER_INSTRUMENT_24H = "declines_per_instrument_24h"
    ATTEMPTS_PER_CUSTOMER_1H = "attempts_per_customer_1h"
    AMOUNT_PER_CUSTOMER_24H = "amount_per_customer_24h"
    DISTINCT_INSTRUMENTS_PER_CUSTOMER_24H = "distinct_instruments_per_customer_24h"
    DISTINCT_CUSTOMERS_PER_INSTRUMENT_24H = "distinct_customers_per_instrument_24h"
    DISTINCT_CUSTOMERS_PER_DEVICE_24H = "distinct_customers_per_device_24h"
    ATTEMPTS_PER_IP_1H = "attempts_per_ip_1h"
    ATTEMPTS_PER_TENANT_1M = "attempts_per_tenant_1m"


class AttributeType(StrEnum):
    """What kind of value an attribute holds, which decides the operators and values a rule may use with it."""

    MONEY = "money"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    ENUM = "enum"
    COUNTRY = "country"


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    type: AttributeType
    # The values an enum attribute takes; empty for the other types.
    choices: tuple[str, ...] = ()
    # For a derived attribute, the attributes it is computed from: an explanation shows them beside it.
    derived_from: tuple[Attribute, ...] = ()


_INTEGER = AttributeSpec(AttributeType.INTEGER)
ATTRIBUTE_SPECS: Final[Mapping[Attribute, AttributeSpec]] = MappingProxyType(
    {
        Attribute.AMOUNT: AttributeSpec(AttributeType.MONEY),
        Attribute.RAIL: AttributeSpec(AttributeType.ENUM, tuple(PaymentRail)),
        Attribute.INITIATOR: AttributeSpec(AttributeType.ENUM, tuple(ChargeInitiator)),
        Attribute.INSTRUMENT_AGE_SECONDS: _INTEGER,
        Attribute.FIRST_CHARGE_AUTHENTICATED: AttributeSpec(AttributeType.BOOLEAN),
        Attribute.ISSUER_COUNTRY: AttributeSpec(AttributeType.COUNTRY),
        Attribute.CUSTOMER_COUNTRY: AttributeSpec(AttributeType.COUNTRY),
        Attribute.ISSUER_COUNTRY_DIFFERS: AttributeSpec(
            AttributeType.BOOLEAN, derived_from=(Attribute.ISSUER_COUNTRY, Attribute.CUSTOMER_COUNTRY)
        ),
        Attribute.DEVICE_FINGERPRINT_PRESENT: AttributeSpec(AttributeType.BOOLEAN),
        Attribute.IP_ADDRESS_PRESENT: AttributeSpec(AttributeType.BOOLEAN),
        Attribute.ATTEMPTS_PER_INSTRUMENT_1H: _INTEGER,
        Attribute.ATTEMPTS_PER_INSTRUMENT_24H: _INTEGER,
        Attribute.DECLINES_PER_INSTRUMENT_24H: _INTEGER,
        Attribute.ATTEMPTS_PER_CUSTOMER_1H: _INTEGER,
        Attribute.AMOUNT_PER_CUSTOMER_24H: AttributeSpec(AttributeType.MONEY),
        Attribute.DISTINCT_INSTRUMENTS_PER_CUSTOMER_24H: _INTEGER,
        Attribute.DISTINCT_CUSTOMERS_PER_INSTRUMENT_24H: _INTEGER,
        Attribute.DISTINCT_CUSTOMERS_PER_DEVICE_24H: _INTEGER,
        Attribute.ATTEMPTS_PER_IP_1H: _INTEGER,
        Attribute.ATTEMPTS_PER_TENANT_1M: _INTEGER,
    }
)

AttributeValue = Money | int | bool | str | None
# An attribute value as JSON (explanations, the stored facts): Money as {"amount": <minor units>, "currency": ...}.
RenderedValue = int | bool | str | dict[str, int | str] | None


def render(value: AttributeValue) -> RenderedValue:
    """An attribute value as JSON can hold it; Money keeps integer minor units beside its currency."""
    if isinstance(value, Money):
        return {"amount": value.amount, "currency": value.currency}
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskFacts:
    """The values of every attribute for one assessment, as the caller gathered and counted them.

    Checked on construction: a counter that does not include the current attempt, or a device counter without a
    device, is a bug in the counting query, and assessing on it would be deciding on wrong numbers.
    """

    amount: Money
    rail: PaymentRail
    initiator: ChargeInitiator
    instrument_age_seconds: int | None
    first_charge_authenticated: bool | None
    issuer_country: str | None
    customer_country: str | None
    device_fingerprint_present: bool
    ip_address_present: bool
    # Rows with this attempt's instrument_key (a vault card's fingerprint, else the token the caller sent) in 1 h.
    attempts_per_instrument_1h: int
    # The same over 24 h.
    attempts_per_instrument_24h: int
    # Rows with this attempt's instrument_key, recorded in the last 24 h, that have `declined` set (the provider
    # refused the charge; the engine's own refusals are no declines). The current attempt is not declined yet.
    declines_per_instrument_24h: int
    # Rows with this attempt's customer_key (the entity contract) in 1 h, whatever instrument they used.
    attempts_per_customer_1h: int
    # Sum of `amount` over rows with this attempt's customer_key and currency in 24 h, this attempt's amount
    # included; rows in other currencies are neither converted nor counted.
    amount_per_customer_24h: Money
    # count(distinct instrument_key) over rows with this attempt's customer_key in 24 h, its own instrument included.
    distinct_instruments_per_customer_24h: int
    # count(distinct customer_key) over rows with this attempt's instrument_key in 24 h, its own customer included.
    distinct_customers_per_instrument_24h: int
    # count(distinct customer_key) over rows with this attempt's device_key in 24 h, its own customer included;
    # None exactly when the request carried no device fingerprint.
    distinct_customers_per_device_24h: int | None
    # Rows with this attempt's ip_key in 1 h; None exactly when the request carried no IP address.
    attempts_per_ip_1h: int | None
    # All of the tenant's rows in the last minute: a burst across many cards is card testing too. None when no rule
    # of the tenant's rule set reads it: the one counter whose cost grows with the tenant's volume.
    attempts_per_tenant_1m: int | None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ValueError("inconsistent risk facts: " + "; ".join(problems))

    @property
    def issuer_country_differs(self) -> bool | None:
        if self.issuer_country is None or self.customer_country is None:
            return None
        return self.issuer_country != self.customer_country

    def value(self, attribute: Attribute) -> AttributeValue:
        """The value a rule testing `attribute` reads."""
        match attribute:
            case Attribute.AMOUNT:
                return self.amount
            case Attribute.RAIL:
                return self.rail
            case Attribute.INITIATOR:
                return self.initiator
            case Attribute.INSTRUMENT_AGE_SECONDS:
                return self.instrument_age_seconds
            case Attribute.FIRST_CHARGE_AUTHENTICATED:
                return self.first_charge_authenticated
            case Attribute.ISSUER_COUNTRY:
                return self.issuer_country
            case Attribute.CUSTOMER_COUNTRY:
                return self.customer_country
            case Attribute.ISSUER_COUNTRY_DIFFERS:
                return self.issuer_country_differs
            case Attribute.DEVICE_FINGERPRINT_PRESENT:
                return self.device_fingerprint_present
            case Attribute.IP_ADDRESS_PRESENT:
                return self.ip_address_present
            case Attribute.ATTEMPTS_PER_INSTRUMENT_1H:
                return self.attempts_per_instrument_1h
            case Attribute.ATTEMPTS_PER_INSTRUMENT_24H:
                return self.attempts_per_instrument_24h
            case Attribute.DECLINES_PER_INSTRUMENT_24H:
                return self.declines_per_instrument_24h
            case Attribute.ATTEMPTS_PER_CUSTOMER_1H:
                return self.attempts_per_customer_1h
            case Attribute.AMOUNT_PER_CUSTOMER_24H:
                return self.amount_per_customer_24h
            case Attribute.DISTINCT_INSTRUMENTS_PER_CUSTOMER_24H:
                return self.distinct_instruments_per_customer_24h
            case Attribute.DISTINCT_CUSTOMERS_PER_INSTRUMENT_24H:
                return self.distinct_customers_per_instrument_24h
            case Attribute.DISTINCT_CUSTOMERS_PER_DEVICE_24H:
                return self.distinct_customers_per_device_24h
            case Attribute.ATTEMPTS_PER_IP_1H:
                return self.attempts_per_ip_1h
            case Attribute.ATTEMPTS_PER_TENANT_1M:
                return self.attempts_per_tenant_1m
            case _:
                assert_never(attribute)

    def as_json(self) -> dict[str, RenderedValue]:
        """Every attribute's value, derived ones included: what billing.risk_assessments.facts stores."""
        return {attribute.value: render(self.value(attribute)) for attribute in Attribute}


# Counters that hold the current attempt itself, so can never be below 1.
_AT_LEAST_ONE: Final = (
    "attempts_per_instrument_1h",
    "attempts_per_instrument_24h",
    "attempts_per_customer_1h",
    "distinct_instruments_per_customer_24h",
    "distinct_customers_per_instrument_24h",
    "distinct_customers_per_device_24h",
    "attempts_per_ip_1h",
    "attempts_per_tenant_1m",
)


def _problems(facts: RiskFacts) -> list[str]:
    problems: list[str] = []
    for attribute, spec in ATTRIBUTE_SPECS.items():
        value = facts.value(attribute)
        if spec.derived_from or value is None:
            continue
        if not _has_type(value, spec):
            problems.append(f"{attribute} is not a valid {spec.type} value")
    if problems:
        return problems
    for name in _AT_LEAST_ONE:
        count = getattr(facts, name)
        if count is not None and count < 1:
            problems.append(f"{name} includes the current attempt, so is at least 1")
    if facts.declines_per_instrument_24h < 0:
        problems.append("declines_per_instrument_24h cannot be negative")
    if facts.instrument_age_seconds is not None and facts.instrument_age_seconds < 0:
        problems.append("instrument_age_seconds cannot be negative")
    if facts.amount.amount <= 0:
        problems.append("amount must be positive")
    total = facts.amount_per_customer_24h
    if total.currency != facts.amount.currency or total.amount < facts.amount.amount:
        problems.append("amount_per_customer_24h is in the attempt's currency and includes its amount")
    if (facts.distinct_customers_per_device_24h is None) == facts.device_fingerprint_present:
        problems.append("distinct_customers_per_device_24h is counted exactly when a device fingerprint is present")
    if (facts.attempts_per_ip_1h is None) == facts.ip_address_present:
        problems.append("attempts_per_ip_1h is counted exactly when an IP address is present")
    return problems


def _has_type(value: AttributeValue, spec: AttributeSpec) -> bool:
    match spec.type:
        case AttributeType.MONEY:
            return isinstance(value, Money)
        case AttributeType.INTEGER:
            return type(value) is int  # bool is an int subclass; True is no count
        case AttributeType.BOOLEAN:
            return type(value) is bool
        case AttributeType.ENUM:
            # The members themselves: a plain "card" would compare equal yet hide a caller passing raw text.
            return isinstance(value, PaymentRail | ChargeInitiator) and value in spec.choices
        case AttributeType.COUNTRY:
            return isinstance(value, str) and COUNTRY_PATTERN.fullmatch(value) is not None
        case _:
            assert_never(spec.type)
