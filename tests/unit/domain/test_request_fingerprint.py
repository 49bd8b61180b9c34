"""The request fingerprint covers every field of the request model: a new field cannot be forgotten."""

from __future__ import annotations

from typing import Any

import pytest

from billing.domain.execution import ExecutionRequest
from tests.factories import CARD_REQUEST

BASE: dict[str, Any] = {**CARD_REQUEST, "metadata": {"invoice": "INV-1"}}
# Another valid value for each field of ExecutionRequest.
CHANGED: dict[str, Any] = {
    "entity_contract_id": "contract-2",
    "plan_contract_id": "plan-yearly",
    "amount": 2000,
    "currency": "USD",
    "payment_rail": "sepa_debit",
    "payment_instrument_id": "tok_mastercard",
    "metadata": {"invoice": "INV-2"},
}


def test_every_field_of_the_request_has_a_changed_value() -> None:
    assert set(CHANGED) == set(ExecutionRequest.model_fields) == set(BASE)


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_fingerprint_changes_with_every_field(field: str) -> None:
    base = ExecutionRequest.model_validate(BASE, strict=False)
    changed = ExecutionRequest.model_validate({**BASE, field: CHANGED[field]}, strict=False)
    assert changed.fingerprint() != base.fingerprint()


def test_fingerprint_of_a_field_left_out_differs_from_it_set() -> None:
    without_instrument = {k: v for k, v in BASE.items() if k != "payment_instrument_id"}
    assert (
        ExecutionRequest.model_validate(without_instrument, strict=False).fingerprint()
        != ExecutionRequest.model_validate(BASE, strict=False).fingerprint()
    )
