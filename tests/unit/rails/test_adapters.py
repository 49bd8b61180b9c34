"""Rail profiles, routing, the charge built from an execution, and how each rail reads a provider's answer."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from billing.domain.execution import Execution, PaymentRail
from billing.rails.adapters import (
    MAX_RETRIES_BY_RAIL,
    apply_rail_semantics,
    default_provider_for,
    rail_profile,
)
from billing.rails.ports import ChargeInitiator, ProviderCharge, provider_idempotency_key
from billing.rails.results import Decision, ProviderError, SubmitOutcome, SubmitResult
from tests.factories import in_memory_execution


def execution(**overrides: Any) -> Execution:
    return in_memory_execution(**{"metadata": {"invoice": "INV-1"}, **overrides})


def test_rail_profile_marks_card_sync_and_debits_async() -> None:
    assert {rail: rail_profile(rail).is_async for rail in PaymentRail} == {
        PaymentRail.CARD: False,
        PaymentRail.SEPA_DEBIT: True,
        PaymentRail.ACH_DEBIT: True,
    }


def test_max_retries_by_rail_covers_every_rail_with_fewer_for_cards() -> None:
    assert dict(MAX_RETRIES_BY_RAIL) == {PaymentRail.CARD: 3, PaymentRail.SEPA_DEBIT: 5, PaymentRail.ACH_DEBIT: 5}
    assert all(rail_profile(rail).max_retries == MAX_RETRIES_BY_RAIL[rail] for rail in PaymentRail)


@pytest.mark.parametrize("rail", list(PaymentRail))
def test_default_provider_for_any_rail_is_sandbox(rail: PaymentRail) -> None:
    assert default_provider_for(rail) == "sandbox"


def test_apply_rail_semantics_on_async_rail_turns_success_into_pending_settlement() -> None:
    result = apply_rail_semantics(SubmitResult.succeeded("sbx_1", request_id="req_1"), is_async=True)
    assert (result.outcome, result.provider_reference, result.request_id) == (
        SubmitOutcome.PENDING_SETTLEMENT,
        "sbx_1",
        "req_1",
    )


def test_apply_rail_semantics_on_sync_rail_keeps_success_and_pending() -> None:
    succeeded = SubmitResult.succeeded("sbx_1")
    pending = SubmitResult.pending_settlement("sbx_2")
    assert apply_rail_semantics(succeeded, is_async=False) == succeeded
    assert apply_rail_semantics(pending, is_async=False) == pending


@pytest.mark.parametrize("is_async", [True, False])
def test_apply_rail_semantics_leaves_errors_untouched(is_async: bool) -> None:
    error = ProviderError("card_declined", "declined", 402)
    failed = SubmitResult.from_error(error, Decision.FAIL, provider_reference="sbx_1")
    assert apply_rail_semantics(failed, is_async=is_async) == failed


def test_provider_charge_from_execution_copies_money_rail_and_instrument() -> None:
    source = execution(amount=4200, currency="USD", payment_rail=PaymentRail.ACH_DEBIT, payment_instrument_id="ach_x")
    charge = ProviderCharge.from_execution(source)
    assert charge == ProviderCharge(
        tenant_id=source.tenant_id,
        execution_id=source.id,
        amount=4200,
        currency="USD",
        rail=PaymentRail.ACH_DEBIT,
        payment_instrument_id="ach_x",
        metadata={"invoice": "INV-1"},
        attempt=1,  # a created execution has made no attempt yet: its first submission is attempt 1
        initiator=ChargeInitiator.CUSTOMER,
        created_at=source.created_at,
        customer_reference=source.entity_contract_id,
    )


def test_provider_charge_of_a_merchant_initiated_execution_says_so() -> None:
    source = execution(metadata={"initiator": "merchant"})
    assert ProviderCharge.from_execution(source).initiator is ChargeInitiator.MERCHANT


@pytest.mark.parametrize("amount", [0, -1, 19.99, True])
def test_provider_charge_with_non_positive_or_non_int_amount_is_refused(amount: Any) -> None:
    with pytest.raises(ValueError, match="minor units"):
        ProviderCharge(uuid4(), uuid4(), amount, "EUR", PaymentRail.CARD, None)


def test_provider_idempotency_key_is_stable_per_execution_and_distinct_across_tenants() -> None:
    first = execution(idempotency_key="order-1")
    same_client_key_other_tenant = execution(idempotency_key="order-1")
    assert provider_idempotency_key(first) == provider_idempotency_key(first)
    assert provider_idempotency_key(first) != provider_idempotency_key(same_client_key_other_tenant)
    assert provider_idempotency_key(first) == f"{first.tenant_id}:{first.id}"
