"""The rule set a tenant gets until it stores one of its own (version 0): what a payments engineer would ship.

Written as the JSON a client would send and put through parse_rule_set, so the defaults pass exactly the checks a
tenant's own rule set must pass.

Amount thresholds are per currency, never converted at assessment time: each map holds hand-rounded equivalents of
one EUR amount in integer minor units of the currency's ISO 4217 exponent (2 for most, 0 for JPY and ISK, 2 for HUF
and CZK even though their coins stop at whole units). They are rounded down to a round figure at 2025 exchange
rates, so moving a little below the EUR amount errs towards asking earlier. A currency not listed never meets an
amount condition: tenants charging in others add their own rule. Revisit the figures when rates move by more than
about 10 %.

Merchant-initiated charges (renewals) fall under none of the customer-initiated rules (`applies_to.initiator`):
the customer is not there to authenticate, and a renewal run may well charge one company card for many contracts
within the same minute. They still count toward every counter (see billing.risk.attributes).
"""

from __future__ import annotations

from typing import Any, Final

from billing.risk.rules import RuleSet, parse_rule_set

DEFAULT_RULE_SET_VERSION: Final = 0

# PSD2's low-value exemption (RTS on SCA, art. 16) ends at EUR 30 per remote transaction; above it the issuer
# expects Strong Customer Authentication from a customer who is present. Kept below EUR 30 in every currency.
SCA_AMOUNT: Final[dict[str, int]] = {
    "EUR": 3000,  # 30.00 EUR
    "USD": 3000,  # 30.00 USD, about 26 EUR
    "GBP": 2500,  # 25.00 GBP, about 29 EUR
    "CHF": 2700,  # 27.00 CHF, about 29 EUR
    "SEK": 30000,  # 300.00 SEK, about 27 EUR
    "NOK": 30000,  # 300.00 NOK, about 26 EUR
    "DKK": 22000,  # 220.00 DKK, about 29.50 EUR (pegged to the euro)
    "PLN": 12500,  # 125.00 PLN, about 29 EUR
    "CZK": 70000,  # 700.00 CZK, about 28 EUR
    "HUF": 1100000,  # 11 000.00 HUF, about 27.50 EUR
    "RON": 14500,  # 145.00 RON, about 29 EUR
    "JPY": 4500,  # 4 500 JPY (no minor unit), about 27 EUR
    "ISK": 4000,  # 4 000 ISK (no minor unit), about 28 EUR
}

# "Large" for a subscription charge on a card added within the day: about EUR 250, well above a typical monthly
# plan, where a stolen card is worth an attacker's effort before its holder notices.
LARGE_AMOUNT: Final[dict[str, int]] = {
    "EUR": 25000,  # 250.00 EUR
    "USD": 25000,  # 250.00 USD, about 217 EUR
    "GBP": 20000,  # 200.00 GBP, about 233 EUR
    "CHF": 22500,  # 225.00 CHF, about 239 EUR
    "SEK": 250000,  # 2 500.00 SEK, about 225 EUR
    "NOK": 250000,  # 2 500.00 NOK, about 214 EUR
    "DKK": 180000,  # 1 800.00 DKK, about 241 EUR
    "PLN": 100000,  # 1 000.00 PLN, about 234 EUR
    "CZK": 600000,  # 6 000.00 CZK, about 244 EUR
    "HUF": 9500000,  # 95 000.00 HUF, about 238 EUR
    "RON": 120000,  # 1 200.00 RON, about 238 EUR
    "JPY": 40000,  # 40 000 JPY, about 238 EUR
    "ISK": 35000,  # 35 000 ISK, about 245 EUR
}

_CUSTOMER_CARD: Final = {"initiator": "customer", "rails": ["card"]}
_CUSTOMER_ANY_RAIL: Final = {"initiator": "customer", "rails": ["card", "sepa_debit", "ach_debit"]}

# Block rules weigh 100: whatever else fires, a blocked charge reads as the riskiest there is.
_DEFAULT_RULES: Final[dict[str, Any]] = {
    "rules": [
        {
            "id": "sca-above-low-value-exemption",
            "description": "Customer-initiated card charges from EUR 30.00 (or the listed equivalent) require 3-D "
            "Secure: the end of PSD2's low-value exemption.",
            "action": "require_3ds",
            # Not a risk signal but the scope of SCA: weight 0 leaves a low-risk charge eligible for the
            # transaction risk analysis exemption (evaluation.transaction_risk_exemption_eligible).
            "score": 0,
            "applies_to": _CUSTOMER_CARD,
            "when": {"attribute": "amount", "op": "gte", "value": SCA_AMOUNT},
        },
        {
            "id": "card-testing-instrument-velocity",
            "description": "Block the 6th customer-initiated card attempt on one card within an hour.",
            "action": "block",
            "score": 100,
            # Five tries cover a genuine customer's typos and a failed 3-D Secure or two; a sixth within the
            # hour is what enumerating expiry dates and security codes on a stolen number looks like.
            "applies_to": _CUSTOMER_CARD,
            "when": {"attribute": "attempts_per_instrument_1h", "op": "gte", "value": 6},
        },
        {
            "id": "repeated-declines",
            "description": "Block a card that the issuer declined 3 times in the last 24 hours.",
            "action": "block",
            "score": 100,
            # After three declines in a day a fourth attempt almost never succeeds, and the card schemes charge
            # for excessive reattempts on a declined card whoever starts them: renewals included.
            "applies_to": {"initiator": "any", "rails": ["card"]},
            "when": {"attribute": "declines_per_instrument_24h", "op": "gte", "value": 3},
        },
        {
            "id": "new-instrument-large-amount",
            "description": "Review a large charge on a payment instrument added less than 24 hours ago.",
            "action": "review",
            "score": 40,
            # Unknown age (a provider's token) never fires: only the vault knows when an instrument was added.
            "applies_to": _CUSTOMER_ANY_RAIL,
            "when": {
                "all_of": [
                    {"attribute": "instrument_age_seconds", "op": "lt", "value": 86400},
                    {"attribute": "amount", "op": "gte", "value": LARGE_AMOUNT},
                ]
            },
        },
        {
            "id": "issuer-country-mismatch",
            "description": "Review a card issued in another country than the customer's.",
            "action": "review",
            # A classic stolen-card signal, but expatriates and cross-border companies are common: a light weight.
            "score": 20,
            "applies_to": _CUSTOMER_CARD,
            "when": {"attribute": "issuer_country_differs", "op": "is_true"},
        },
        {
            "id": "shared-device",
            "description": "Review a charge from a device that paid for more than 3 customers in 24 hours.",
            "action": "review",
            # Households and small offices share a computer; a fourth customer on one device in a day is a
            # fraud ring's or a reseller's, not a family's.
            "score": 40,
            "applies_to": _CUSTOMER_ANY_RAIL,
            "when": {"attribute": "distinct_customers_per_device_24h", "op": "gt", "value": 3},
        },
    ]
}


def default_rule_set() -> RuleSet:
    """The rule set of a tenant that stored none."""
    return _DEFAULT_RULE_SET


# Parsed once at import: a default that fails validation stops the function at cold start, not at a charge.
_DEFAULT_RULE_SET: Final = parse_rule_set(_DEFAULT_RULES, version=DEFAULT_RULE_SET_VERSION)
