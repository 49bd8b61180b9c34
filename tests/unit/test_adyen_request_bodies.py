"""The /payments and /refunds bodies say who starts the charge, and the Idempotency-Key fits Adyen's 64 characters."""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID, uuid4

import pytest

from billing.domain.execution import PaymentRail
from billing.providers.adyen.errors import adyen_decision_for
from billing.providers.adyen.idempotency import MAX_IDEMPOTENCY_KEY_LENGTH, adyen_idempotency_key
from billing.providers.adyen.request_bodies import (
    ChargeNotSendable,
    payment_request,
    refund_request,
    shopper_context_for,
)
from billing.rails.ports import ChargeInitiator, ProviderCharge, ProviderRefund
from billing.rails.results import Decision

TENANT = UUID("7d1f0c3a-5b2e-4f60-8a9b-0c1d2e3f4a5b")
EXECUTION = UUID("3f0e4b8e-2f4c-4e55-9f3c-6d8e1b2a7c90")
CHARGE = ProviderCharge(
    tenant_id=TENANT,
    execution_id=EXECUTION,
    amount=1999,
    currency="EUR",
    rail=PaymentRail.CARD,
    payment_instrument_id="M5N7TQ4TG5PFWR50",
    metadata={"order": "A-1", "email": "someone@example.com"},
    customer_reference="contract-42",
)


def test_customer_initiated_stored_card_is_ecommerce_card_on_file() -> None:
    body = payment_request(CHARGE, merchant_account="MerchantECOM", return_url="https://shop.example/r")
    assert body == {
        "amount": {"value": 1999, "currency": "EUR"},
        "reference": str(EXECUTION),
        "merchantAccount": "MerchantECOM",
        "paymentMethod": {"type": "scheme", "storedPaymentMethodId": "M5N7TQ4TG5PFWR50"},
        "shopperReference": "contract-42",
        "shopperInteraction": "Ecommerce",
        "recurringProcessingModel": "CardOnFile",
        "returnUrl": "https://shop.example/r",
        # Ids only: the execution's own metadata (an e-mail here) never goes to Adyen.
        "metadata": {"tenant_id": str(TENANT), "execution_id": str(EXECUTION)},
    }


def test_merchant_initiated_charge_is_cont_auth_subscription() -> None:
    body = payment_request(
        replace(CHARGE, initiator=ChargeInitiator.MERCHANT), merchant_account="M", return_url="https://shop.example/r"
    )
    assert (body["shopperInteraction"], body["recurringProcessingModel"]) == ("ContAuth", "Subscription")


def test_every_initiator_has_a_shopper_context() -> None:
    contexts = {shopper_context_for(initiator) for initiator in ChargeInitiator}
    assert len(contexts) == len(ChargeInitiator)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"rail": PaymentRail.SEPA_DEBIT}, "payment_method_unsupported"),
        ({"payment_instrument_id": None}, "payment_method_missing"),
        ({"customer_reference": None}, "shopper_reference_missing"),
    ],
)
def test_charge_adyen_cannot_take_is_refused_before_sending(change: dict[str, object], code: str) -> None:
    with pytest.raises(ChargeNotSendable) as refused:
        payment_request(replace(CHARGE, **change), merchant_account="M", return_url="https://shop.example/r")  # type: ignore[arg-type]
    assert refused.value.code == code
    assert adyen_decision_for(code) is Decision.FAIL


def test_refund_body_carries_our_refund_id_as_reference() -> None:
    refund = ProviderRefund(TENANT, EXECUTION, uuid4(), "993617895204576J", 500, "EUR")
    assert refund_request(refund, merchant_account="M") == {
        "amount": {"value": 500, "currency": "EUR"},
        "merchantAccount": "M",
        "reference": str(refund.refund_id),
    }


def test_idempotency_key_fits_adyens_limit_and_is_stable_per_provider_key() -> None:
    # Given the port's keys for one execution: the charge's, its cancel's and a refund's (73, 80 and 117 characters)
    charge_key = f"{TENANT}:{EXECUTION}"
    keys = [charge_key, f"{charge_key}:cancel", f"{charge_key}:refund:{uuid4()}"]
    assert all(len(key) > MAX_IDEMPOTENCY_KEY_LENGTH for key in keys)
    # When mapped to Adyen's header
    sent = [adyen_idempotency_key(key) for key in keys]
    # Then each fits, is a UUID as Adyen recommends, is the same on every attempt, and none collide
    assert all(len(value) <= MAX_IDEMPOTENCY_KEY_LENGTH for value in sent)
    assert all(str(UUID(value)) == value for value in sent)
    assert sent == [adyen_idempotency_key(key) for key in keys]
    assert len(set(sent)) == len(sent)
    # And another tenant's charge of the same execution id would not share the key
    assert adyen_idempotency_key(f"{uuid4()}:{EXECUTION}") != sent[0]


def test_idempotency_key_is_required() -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        adyen_idempotency_key("")


def test_idempotency_key_derivation_never_changes() -> None:
    # A changed derivation would give a resubmission after a deploy a new key, and Adyen would charge again.
    assert adyen_idempotency_key(f"{TENANT}:{EXECUTION}") == "5fc658c0-9e91-519c-891f-a88cc57f5431"
