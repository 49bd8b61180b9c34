"""The instrument model: ids that never look like card numbers, the lifecycle, typed updates, the request shape."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from billing.domain.execution import PaymentRail, looks_like_card_number
from billing.instruments.api import InstrumentCreateRequest, InstrumentResource
from billing.instruments.model import (
    INSTRUMENT_TRANSITIONS,
    Attr,
    Deactivated,
    Expired,
    ExpiryUpdated,
    HolderNameChanged,
    InstrumentStatus,
    InstrumentType,
    PaymentInstrument,
    ProviderTokenProvisioned,
    chargeable_rail,
    instrument_id_of,
    instrument_uuid,
    is_instrument_id,
    new_instrument_id,
    status_change,
    term_changes,
)

NOW = datetime(2026, 12, 11, 12, tzinfo=UTC)


def test_new_instrument_ids_are_recognisable_and_never_look_like_card_numbers() -> None:
    ids = {new_instrument_id() for _ in range(3000)}
    assert len(ids) == 3000
    assert all(is_instrument_id(i) and not looks_like_card_number(i) for i in ids)
    one = next(iter(ids))
    assert instrument_id_of(instrument_uuid(one)) == one


@pytest.mark.parametrize("token", ["tok_visa", "iban_settles_paid", "pi_123", "pi_" + "0" * 31, "PI_" + "a" * 32, None])
def test_sandbox_tokens_and_look_alikes_are_not_instrument_ids(token: str | None) -> None:
    assert not is_instrument_id(token)


def test_lifecycle_only_moves_forward_from_active() -> None:
    assert {
        (InstrumentStatus.ACTIVE, InstrumentStatus.EXPIRED),
        (InstrumentStatus.ACTIVE, InstrumentStatus.DEACTIVATED),
    } == INSTRUMENT_TRANSITIONS


def test_each_rail_takes_its_own_instrument_type() -> None:
    assert chargeable_rail(InstrumentType.CARD) is PaymentRail.CARD
    assert chargeable_rail(InstrumentType.SEPA_DEBIT) is PaymentRail.SEPA_DEBIT


def test_typed_updates_say_which_terms_or_status_they_change() -> None:
    assert term_changes(ExpiryUpdated(3, 2031)) == {"exp_month": "3", "exp_year": "2031"}
    assert term_changes(HolderNameChanged("J Doe")) == {"holder_name": "J Doe"}
    assert term_changes(ProviderTokenProvisioned("stripe", "pm_1")) == {"provider_token.stripe": "pm_1"}
    assert term_changes(Deactivated(NOW)) == {}
    assert status_change(Deactivated(NOW)) == (InstrumentStatus.DEACTIVATED, NOW)
    assert status_change(Expired(NOW)) == (InstrumentStatus.EXPIRED, NOW)
    assert status_change(ExpiryUpdated(3, 2031)) is None


def _instrument(**terms: str) -> PaymentInstrument:
    return PaymentInstrument(
        uuid4(), new_instrument_id(), "contract-1", InstrumentStatus.ACTIVE, NOW, None, NOW, NOW,
        {Attr.INSTRUMENT_TYPE: "card", **terms},
    )  # fmt: skip


def test_an_active_card_past_its_month_shows_as_expired_with_its_end() -> None:
    card = _instrument(exp_month="11", exp_year="2026")
    assert card.effective_status(NOW) is InstrumentStatus.EXPIRED
    resource = InstrumentResource.of(card, NOW)
    assert (resource.status, resource.valid_to) == ("expired", datetime(2026, 12, 1, tzinfo=UTC))
    assert _instrument(exp_month="12", exp_year="2026").effective_status(NOW) is InstrumentStatus.ACTIVE


def test_resource_never_carries_tokens_or_the_iin() -> None:
    card = _instrument(vault_token="vtok_" + "a" * 32, iin="42424242", **{"provider_token.sandbox": "tok_visa"})
    shown = InstrumentResource.of(card, NOW).model_dump_json()
    assert "vtok_" not in shown
    assert "42424242" not in shown
    assert "tok_visa" not in shown


CARD: dict[str, Any] = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030}


@pytest.mark.parametrize(
    "body",
    [
        {"entity_contract_id": "c-1", "type": "card"},
        {
            "entity_contract_id": "c-1",
            "type": "card",
            "card": CARD,
            "provider_token": {"provider": "stripe", "token": "pm_1"},
        },
        {"entity_contract_id": "c-1", "type": "sepa_debit", "card": CARD},
        {"entity_contract_id": "c-1", "type": "card", "card": {**CARD, "holder_name": "4242 4242 4242 4242"}},
        {"entity_contract_id": "4242424242424242", "type": "card", "card": CARD},
        {"entity_contract_id": "c-1", "type": "card", "card": {**CARD, "exp_month": 13}},
        {"entity_contract_id": "c-1", "type": "card", "card": {**CARD, "pan": "x"}},
        {"entity_contract_id": "c-1", "type": "card", "provider_token": {"provider": "adyen", "token": "pm_1"}},
    ],
)
def test_request_shape_refusals(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        InstrumentCreateRequest.model_validate(body)


def test_request_repr_hides_number_and_cvc() -> None:
    request = InstrumentCreateRequest.model_validate(
        {"entity_contract_id": "c-1", "type": "card", "card": {**CARD, "cvc": "987"}}
    )
    assert "4242424242424242" not in repr(request)
    assert "987" not in repr(request)
