"""3-D Secure at Stripe: what each ThreeDSecureInstruction puts in a PaymentIntent, and what Stripe's objects (as the
SDK's to_dict() gives them) report of the authentication it ran."""

from __future__ import annotations

import typing
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from stripe._charge import Charge

from billing.domain.execution import PaymentRail
from billing.providers.stripe.params import payment_intent_params
from billing.providers.stripe.server_profile import LOCALSTRIPE, STRIPE
from billing.providers.stripe.three_ds import (
    TRANS_STATUS_BY_RESULT,
    ThreeDSecureNotSendable,
    authentication_for,
    authentication_from,
    card_options_for,
    charge_three_d_secure,
    imported_three_d_secure,
)
from billing.rails.ports import ChargeInitiator, ProviderCharge
from billing.rails.three_ds import (
    NO_THREE_DS,
    AuthenticationData,
    Exemption,
    ProviderAuthentication,
    ThreeDSecureInstruction,
    ThreeDSecureMode,
)

TENANT = UUID("00000000-0000-4000-8000-000000000001")
EXECUTION = UUID("00000000-0000-4000-8000-000000000002")
# 20 bytes, base64: the shape of a real CAVV.
CAVV = "AJkBBkhgQQAAAE4gSEJydQAAAAA="
DS_TRANS_ID = "f25084f0-5b16-4c0a-ae5d-b24808a95e4b"
ENGINE_AUTHENTICATION = AuthenticationData(
    trans_status="Y",
    eci="05",
    authentication_value=CAVV,
    three_ds_server_trans_id="8a880dc0-d2d2-4067-bcb1-b08d1690b26e",
    ds_trans_id=DS_TRANS_ID,
    message_version="2.2.0",
)
REQUEST = ThreeDSecureInstruction(ThreeDSecureMode.REQUEST)
AUTHENTICATED = ThreeDSecureInstruction(ThreeDSecureMode.AUTHENTICATED, data=ENGINE_AUTHENTICATION)


def charge(**overrides: Any) -> ProviderCharge:
    fields: dict[str, Any] = {
        "tenant_id": TENANT,
        "execution_id": EXECUTION,
        "amount": 1999,
        "currency": "EUR",
        "rail": PaymentRail.CARD,
        "payment_instrument_id": "pm_card_visa",
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    return ProviderCharge(**{**fields, **overrides})


def exempt(exemption: Exemption) -> ThreeDSecureInstruction:
    return ThreeDSecureInstruction(ThreeDSecureMode.EXEMPT, exemption=exemption)


def three_d_secure(**fields: Any) -> dict[str, Any]:
    """payment_method_details.card.three_d_secure as Stripe's API reference shows it (every key, nulls included)."""
    return {
        "authentication_flow": None,
        "electronic_commerce_indicator": None,
        "exemption_indicator": None,
        "exemption_indicator_applied": None,
        "result": None,
        "result_reason": None,
        "transaction_id": None,
        "version": None,
        **fields,
    }


def stripe_charge(reported: dict[str, Any] | None) -> dict[str, Any]:
    """A succeeded card Charge as an expanded latest_charge carries it."""
    card: dict[str, Any] = {
        "brand": "visa",
        "country": "DE",
        "exp_month": 12,
        "exp_year": 2030,
        "funding": "credit",
        "last4": "3184",
        "network": "visa",
        "three_d_secure": reported,
        "wallet": None,
    }
    return {
        "id": "ch_3Qx",
        "object": "charge",
        "status": "succeeded",
        "paid": True,
        "payment_intent": "pi_123",
        "payment_method": "pm_123",
        "payment_method_details": {"card": card, "type": "card"},
    }


def intent(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "pi_123", "object": "payment_intent", "status": status, "client_secret": "pi_123_secret_a", **fields}


# --- what is sent ------------------------------------------------------------------------------------------------


def test_request_asks_stripe_to_authenticate_whenever_the_card_can() -> None:
    params = payment_intent_params(charge(three_ds=REQUEST), profile=STRIPE, return_url="https://shop/return")
    assert params["payment_method_options"] == {"card": {"request_three_d_secure": "any"}}
    assert "error_on_requires_action" not in params


@pytest.mark.parametrize("instruction", [NO_THREE_DS, *(exempt(e) for e in Exemption)], ids=str)
def test_no_instruction_and_every_exemption_leave_stripes_defaults(instruction: ThreeDSecureInstruction) -> None:
    # Stripe has no PaymentIntent parameter for a PSD2 exemption; nothing is invented, nothing is sent.
    assert card_options_for(instruction) is None
    params = payment_intent_params(charge(three_ds=instruction), profile=STRIPE, return_url=None)
    assert "payment_method_options" not in params
    assert "error_on_requires_action" not in params


def test_a_merchant_initiated_exemption_is_expressed_by_off_session_alone() -> None:
    mit = charge(three_ds=exempt(Exemption.MERCHANT_INITIATED), initiator=ChargeInitiator.MERCHANT)
    params = payment_intent_params(mit, profile=STRIPE, return_url="https://shop/return")
    assert params["off_session"] is True
    assert "payment_method_options" not in params


def test_an_engine_authentication_is_imported_with_every_field_stripe_takes() -> None:
    params = payment_intent_params(charge(three_ds=AUTHENTICATED), profile=STRIPE, return_url=None)
    assert params["payment_method_options"] == {
        "card": {
            "three_d_secure": {
                "version": "2.2.0",
                "electronic_commerce_indicator": "05",
                "cryptogram": CAVV,
                "transaction_id": DS_TRANS_ID,
                "ares_trans_status": "Y",
            }
        }
    }
    # Stripe's advice for imported results: a soft decline fails rather than authenticating a second time.
    assert params["error_on_requires_action"] is True


def test_localstripe_gets_the_import_but_not_error_on_requires_action_which_it_refuses() -> None:
    params = payment_intent_params(charge(three_ds=AUTHENTICATED), profile=LOCALSTRIPE, return_url=None)
    assert params["payment_method_options"] == {"card": card_options_for(AUTHENTICATED)}
    assert "error_on_requires_action" not in params


def test_an_authentication_without_ds_trans_id_cannot_be_imported() -> None:
    without = replace(ENGINE_AUTHENTICATION, ds_trans_id=None)
    with pytest.raises(ThreeDSecureNotSendable, match="dsTransID"):
        imported_three_d_secure(without)


@pytest.mark.parametrize("rail", [PaymentRail.SEPA_DEBIT, PaymentRail.ACH_DEBIT])
def test_a_debit_never_carries_card_three_d_secure_options(rail: PaymentRail) -> None:
    params = payment_intent_params(charge(rail=rail, three_ds=REQUEST), profile=STRIPE, return_url=None)
    assert "payment_method_options" not in params


def test_the_cryptogram_is_not_in_the_charges_repr() -> None:
    assert CAVV not in repr(charge(three_ds=AUTHENTICATED))


def test_the_same_charge_sends_the_same_three_d_secure_every_attempt() -> None:
    first = payment_intent_params(charge(three_ds=AUTHENTICATED), profile=STRIPE, return_url=None)
    again = payment_intent_params(charge(three_ds=AUTHENTICATED, attempt=2), profile=STRIPE, return_url=None)
    assert first == again


def test_profiles_record_what_each_server_does_with_three_d_secure() -> None:
    assert (STRIPE.honours_three_d_secure_options, STRIPE.reports_three_d_secure) == (True, True)
    assert STRIPE.accepts_error_on_requires_action
    # localstripe takes the options and ignores them, refuses error_on_requires_action, reports no result.
    assert not any(
        (
            LOCALSTRIPE.honours_three_d_secure_options,
            LOCALSTRIPE.accepts_error_on_requires_action,
            LOCALSTRIPE.reports_three_d_secure,
        )
    )


# --- what Stripe reports -----------------------------------------------------------------------------------------


def test_a_challenged_authentication_is_reported_in_full() -> None:
    reported = three_d_secure(
        authentication_flow="challenge",
        electronic_commerce_indicator="05",
        result="authenticated",
        transaction_id=DS_TRANS_ID,
        version="2.2.0",
    )
    assert authentication_from(reported) == ProviderAuthentication(
        trans_status="Y",
        eci="05",
        message_version="2.2.0",
        flow="challenge",
        ds_trans_id=DS_TRANS_ID,
        authentication_value_present=False,
    )


@pytest.mark.parametrize(
    ("result", "reason", "trans_status"),
    [
        ("authenticated", None, "Y"),
        ("attempt_acknowledged", None, "A"),
        ("failed", "abandoned", "N"),
        ("failed", "canceled", "N"),
        ("failed", "rejected", "R"),
        ("not_supported", "card_not_enrolled", "U"),
        ("processing_error", "protocol_error", "U"),
        ("exempted", None, None),
        ("data_share_only", None, None),
    ],
)
def test_each_result_is_its_emv_trans_status(result: str, reason: str | None, trans_status: str | None) -> None:
    authentication = authentication_from(three_d_secure(result=result, result_reason=reason))
    assert authentication.trans_status == trans_status


def test_the_table_covers_every_result_the_sdk_knows() -> None:
    # The SDK's annotation: Optional[Union[Literal[...every result...], str]].
    annotation = typing.get_type_hints(Charge.PaymentMethodDetails.Card.ThreeDSecure)["result"]
    [literal] = [arg for arg in typing.get_args(annotation) if typing.get_origin(arg) is typing.Literal]
    assert set(TRANS_STATUS_BY_RESULT) == set(typing.get_args(literal))


def test_an_exempted_charge_reports_the_exemption_instead_of_a_trans_status() -> None:
    frictionless_low_risk = three_d_secure(
        result="exempted", exemption_indicator="low_risk", exemption_indicator_applied=True, version="2.2.0"
    )
    assert authentication_from(frictionless_low_risk).exemption == "low_risk"
    # An exemption without an indicator is reported all the same.
    assert authentication_from(three_d_secure(result="exempted")).exemption == "exempted"
    # "none" is Stripe's word for no exemption.
    assert authentication_from(three_d_secure(result="authenticated", exemption_indicator="none")).exemption is None


def test_an_expanded_latest_charge_reports_its_authentication() -> None:
    reported = three_d_secure(
        authentication_flow="frictionless", electronic_commerce_indicator="06", result="attempt_acknowledged"
    )
    found = authentication_for(intent("succeeded", latest_charge=stripe_charge(reported)))
    assert found is not None
    assert (found.trans_status, found.eci, found.flow) == ("A", "06", "frictionless")


@pytest.mark.parametrize(
    "latest_charge",
    [
        pytest.param("ch_3Qx", id="unexpanded"),
        pytest.param(None, id="no-charge"),
        pytest.param(stripe_charge(None), id="no-three-d-secure"),
        pytest.param({"id": "ch_1", "object": "charge", "status": "succeeded"}, id="localstripe-charge"),
    ],
)
def test_a_charge_that_says_nothing_of_three_d_secure_reports_nothing(latest_charge: object) -> None:
    assert charge_three_d_secure(latest_charge) is None
    assert authentication_for(intent("succeeded", latest_charge=latest_charge)) is None


@pytest.mark.parametrize(
    "next_action",
    [
        {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": ""}},
        {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "stripe_3ds2_fingerprint"}},
        {"type": "redirect_to_url", "redirect_to_url": {"url": "https://hooks.stripe.com/3d_secure_2/x"}},
    ],
    ids=["sdk-redirect", "sdk-fingerprint", "redirect"],
)
def test_an_intent_waiting_for_the_customers_authentication_is_trans_status_c(next_action: dict[str, Any]) -> None:
    found = authentication_for(intent("requires_action", next_action=next_action, latest_charge=None))
    assert found == ProviderAuthentication(trans_status="C")


def test_an_intent_waiting_for_something_else_is_no_authentication() -> None:
    microdeposits = {"type": "verify_with_microdeposits", "verify_with_microdeposits": {}}
    assert authentication_for(intent("requires_action", next_action=microdeposits)) is None
    # Nothing tried yet (requires_payment_method without an error): nobody is authenticating.
    assert authentication_for(intent("requires_payment_method", next_action=None)) is None


def test_a_failed_authentication_without_a_charge_is_trans_status_n() -> None:
    failure = {"code": "payment_intent_authentication_failure", "message": "The provided PaymentMethod has failed"}
    for status in ("requires_payment_method", "canceled"):
        found = authentication_for(intent(status, last_payment_error=failure, latest_charge=None))
        assert found == ProviderAuthentication(trans_status="N")
    # A decline is not an authentication failure.
    declined = {"code": "card_declined", "decline_code": "insufficient_funds"}
    assert authentication_for(intent("requires_payment_method", last_payment_error=declined)) is None


def test_a_decline_after_authenticating_keeps_the_charges_authentication() -> None:
    failed_charge = {**stripe_charge(three_d_secure(result="authenticated", version="2.2.0")), "status": "failed"}
    declined = {"code": "card_declined", "decline_code": "insufficient_funds"}
    found = authentication_for(
        intent("requires_payment_method", last_payment_error=declined, latest_charge=failed_charge)
    )
    assert found is not None
    assert found.trans_status == "Y"
