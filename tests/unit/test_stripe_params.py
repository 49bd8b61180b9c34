"""What StripeProvider sends: PaymentIntent and Refund parameters, metadata, amounts in Stripe's units."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing.domain.execution import PaymentRail
from billing.providers.stripe.amounts import from_stripe_amount, stripe_exponent, to_stripe_amount
from billing.providers.stripe.params import (
    MAX_METADATA_KEYS,
    charge_metadata,
    payment_intent_params,
    refund_metadata,
    refund_params,
)
from billing.providers.stripe.server_profile import LOCALSTRIPE, PROFILES, STRIPE, profile_named
from billing.rails.ports import ChargeInitiator, ProviderCharge, ProviderRefund
from billing.webhooks.stripe import OUR_REFUND_ID_METADATA_KEY

TENANT = UUID("00000000-0000-4000-8000-000000000001")
EXECUTION = UUID("00000000-0000-4000-8000-000000000002")


def charge(**overrides: Any) -> ProviderCharge:
    fields: dict[str, Any] = {
        "tenant_id": TENANT,
        "execution_id": EXECUTION,
        "amount": 1999,
        "currency": "EUR",
        "rail": PaymentRail.CARD,
        "payment_instrument_id": "pm_card_visa",
        "metadata": {"invoice": "INV-1"},
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    return ProviderCharge(**{**fields, **overrides})


def refund(**overrides: Any) -> ProviderRefund:
    fields: dict[str, Any] = {
        "tenant_id": TENANT,
        "execution_id": EXECUTION,
        "refund_id": uuid4(),
        "payment_reference": "pi_123",
        "amount": 500,
        "currency": "EUR",
    }
    return ProviderRefund(**{**fields, **overrides})


def test_payment_intent_is_created_and_confirmed_in_minor_units_with_lower_case_currency() -> None:
    params = payment_intent_params(charge(), profile=STRIPE, return_url=None)

    assert (params["amount"], params["currency"], params["confirm"]) == (1999, "eur", True)
    assert params["payment_method"] == "pm_card_visa"
    assert params["allowed_payment_method_types"] == ["card"]
    assert "off_session" not in params


@pytest.mark.parametrize(
    ("rail", "method_type"),
    [(PaymentRail.CARD, "card"), (PaymentRail.SEPA_DEBIT, "sepa_debit"), (PaymentRail.ACH_DEBIT, "us_bank_account")],
)
def test_each_rail_restricts_the_payment_method_type(rail: PaymentRail, method_type: str) -> None:
    assert payment_intent_params(charge(rail=rail), profile=STRIPE, return_url=None)[
        "allowed_payment_method_types"
    ] == [method_type]


def test_localstripe_gets_only_the_parameters_it_takes() -> None:
    params = payment_intent_params(charge(), profile=LOCALSTRIPE, return_url="https://shop/return")

    assert set(params) == {"amount", "currency", "payment_method", "confirm", "metadata"}


def test_merchant_initiated_charge_is_off_session_without_return_url() -> None:
    params = payment_intent_params(
        charge(initiator=ChargeInitiator.MERCHANT), profile=STRIPE, return_url="https://shop/return"
    )

    assert params["off_session"] is True
    assert "return_url" not in params


def test_customer_charge_carries_the_configured_return_url_and_a_description() -> None:
    params = payment_intent_params(charge(), profile=STRIPE, return_url="https://shop/return")

    assert params["return_url"] == "https://shop/return"
    assert params["description"] == f"billing execution {EXECUTION}"


def test_a_charge_without_payment_method_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="payment method"):
        payment_intent_params(charge(payment_instrument_id=None), profile=STRIPE, return_url=None)


def test_our_ids_win_over_client_metadata() -> None:
    metadata = charge_metadata(charge(metadata={"invoice": "INV-1", "execution_id": "other", "tenant_id": "other"}))

    assert metadata == {"invoice": "INV-1", "tenant_id": str(TENANT), "execution_id": str(EXECUTION)}


def test_client_metadata_that_does_not_fit_stripe_is_left_out() -> None:
    client = {"ok": "yes", "x" * 41: "long key", "nested[key]": "brackets", "long": "v" * 501, "number": 7}

    assert charge_metadata(charge(metadata=client)) == {
        "ok": "yes",
        "tenant_id": str(TENANT),
        "execution_id": str(EXECUTION),
    }


def test_metadata_stays_within_fifty_keys_and_is_the_same_every_time() -> None:
    client = {f"key{n:02d}": str(n) for n in range(50)}

    first = charge_metadata(charge(metadata=client))
    again = charge_metadata(charge(metadata=dict(reversed(list(client.items())))))

    assert len(first) == MAX_METADATA_KEYS
    assert first == again
    assert first["execution_id"] == str(EXECUTION)
    assert "key47" in first
    assert "key48" not in first


def test_refund_carries_our_ids_under_the_key_the_webhook_reads() -> None:
    ours = refund()

    params = refund_params(ours, profile=STRIPE)

    assert (params["payment_intent"], params["amount"]) == ("pi_123", 500)
    assert params["metadata"] == refund_metadata(ours)
    assert params["metadata"][OUR_REFUND_ID_METADATA_KEY] == str(ours.refund_id)


@pytest.mark.parametrize(
    ("reason", "profile", "sent"),
    [
        ("requested_by_customer", STRIPE, "requested_by_customer"),
        ("duplicate", STRIPE, "duplicate"),
        ("fraudulent", STRIPE, "fraudulent"),
        ("goodwill", STRIPE, None),
        (None, STRIPE, None),
        ("requested_by_customer", LOCALSTRIPE, None),
    ],
)
def test_refund_reason_only_when_stripe_knows_it_and_the_server_takes_it(
    reason: str | None, profile: Any, sent: str | None
) -> None:
    assert refund_params(refund(reason=reason), profile=profile).get("reason") == sent


@pytest.mark.parametrize(("currency", "ours", "stripes"), [("EUR", 1999, 1999), ("JPY", 500, 500), ("ISK", 5, 500),
                                                           ("KWD", 1250, 1250), ("UGX", 900, 900)])  # fmt: skip
def test_amounts_convert_exactly_to_and_from_stripes_units(currency: str, ours: int, stripes: int) -> None:
    assert to_stripe_amount(ours, currency) == stripes
    assert from_stripe_amount(stripes, currency) == ours


def test_isk_is_two_decimal_at_stripe_and_a_fractional_krona_is_refused() -> None:
    assert stripe_exponent("isk") == 2
    with pytest.raises(ValueError, match="not a whole number"):
        from_stripe_amount(501, "ISK")


def test_refund_amount_is_converted_too() -> None:
    assert refund_params(refund(amount=3, currency="ISK"), profile=STRIPE)["amount"] == 300


def test_profiles_are_found_by_name() -> None:
    assert profile_named("stripe") is STRIPE
    assert profile_named("localstripe") is LOCALSTRIPE
    assert set(PROFILES) == {"stripe", "localstripe"}
    with pytest.raises(ValueError, match="unknown Stripe server profile"):
        profile_named("adyen")


def test_localstripe_profile_records_what_it_lacks() -> None:
    assert not any(
        (
            LOCALSTRIPE.honours_idempotency_key,
            LOCALSTRIPE.supports_search,
            LOCALSTRIPE.supports_list_filters,
            LOCALSTRIPE.accepts_description,
            LOCALSTRIPE.accepts_return_url,
            LOCALSTRIPE.accepts_refund_reason,
        )
    )
