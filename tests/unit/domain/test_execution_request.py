"""Bad input is refused with a typed error naming the field, before anything could be written."""

from __future__ import annotations

from typing import Any

import pytest

from billing.domain.errors import ValidationFailed
from billing.domain.execution import ExecutionRequest, looks_like_card_number, validate_idempotency_key

VALID: dict[str, Any] = {
    "entity_contract_id": "contract-1",
    "plan_contract_id": "plan-1",
    "amount": 1999,
    "currency": "EUR",
    "payment_rail": "card",
}


def test_valid_request_parses_with_int_amount() -> None:
    request = ExecutionRequest.parse(VALID)
    assert (request.amount, request.currency, request.payment_rail) == (1999, "EUR", "card")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 0),
        ("amount", -100),
        ("amount", 19.99),
        ("amount", "1999"),
        ("amount", True),
        ("amount", 10**16),
        ("currency", "eur"),
        ("currency", "ABC"),
        ("currency", 978),
        ("payment_rail", "wire"),
        ("payment_rail", "CARD"),
        ("entity_contract_id", ""),
        ("entity_contract_id", "x'; drop table billing.billing_executions; --"),
        ("plan_contract_id", "p" * 200),
        ("metadata", {"note": "card 4242 4242 4242 4242"}),
        ("metadata", {"bad key!": "x"}),
        ("metadata", {"k": "v" * 501}),
        ("metadata", {f"k{i}": "v" for i in range(51)}),
        ("metadata", {"k" * 41: "v"}),
        ("metadata", {"": "v"}),
        ("metadata", {"nested": {"a": "b"}}),
        ("metadata", {"count": 3}),
        ("metadata", {"flag": True}),
        ("metadata", {"gone": None}),
        ("metadata", {"list": ["a"]}),
        ("metadata", {"4111111111111111": "v"}),
        ("metadata", {"note": "nul\x00inside"}),
        ("metadata", {"note": "lone \ud800 surrogate"}),
        ("metadata", ["not", "an", "object"]),
        ("payment_instrument_id", "4111111111111111"),
        ("entity_contract_id", "5555555555554444"),
    ],
)
def test_invalid_field_raises_validation_failed_naming_it(field: str, value: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        ExecutionRequest.parse({**VALID, field: value})
    assert any(error.field.startswith(field) for error in caught.value.errors)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationFailed) as caught:
        ExecutionRequest.parse({**VALID, "tenant_id": "someone-else"})
    assert caught.value.errors[0].field == "tenant_id"


@pytest.mark.parametrize("missing", ["entity_contract_id", "amount", "currency", "payment_rail"])
def test_missing_required_field_is_rejected(missing: str) -> None:
    body = {k: v for k, v in VALID.items() if k != missing}
    with pytest.raises(ValidationFailed):
        ExecutionRequest.parse(body)


def test_fingerprint_changes_with_any_parameter_and_ignores_key_order() -> None:
    base = ExecutionRequest.parse(VALID)
    reordered = ExecutionRequest.parse(dict(reversed(list(VALID.items()))))
    assert base.fingerprint() == reordered.fingerprint()
    for field, value in [("amount", 2000), ("currency", "USD"), ("plan_contract_id", "plan-2")]:
        assert ExecutionRequest.parse({**VALID, field: value}).fingerprint() != base.fingerprint()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4242424242424242", True), ("4242-4242-4242-4242", True), ("4242424242424241", False), ("INV-2026-0001", False)],
)
def test_card_number_detector_uses_luhn(text: str, expected: bool) -> None:
    assert looks_like_card_number(text) is expected


@pytest.mark.parametrize("key", [None, "", " ", "a b", "x" * 256, "line\nbreak", "nul\x00", "4111111111111111"])
def test_invalid_idempotency_key_is_rejected(key: str | None) -> None:
    with pytest.raises(ValidationFailed):
        validate_idempotency_key(key)


def test_metadata_at_the_documented_limits_is_accepted() -> None:
    metadata = {f"k{i}": "v" * 500 for i in range(49)} | {"k" * 40: ""}
    assert ExecutionRequest.parse({**VALID, "metadata": metadata}).metadata == metadata


def test_metadata_key_that_is_a_card_number_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ValidationFailed) as caught:
        ExecutionRequest.parse({**VALID, "metadata": {"4111 1111 1111 1111": "v"}})
    assert all("4111" not in error.field + error.message for error in caught.value.errors)
    assert any(error.field.startswith("metadata") for error in caught.value.errors)
