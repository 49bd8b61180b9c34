"""Every resultCode of Checkout v71's enum is decided, once, and the decision table agrees with each result."""

from __future__ import annotations

from typing import Any

import pytest

from billing.providers.adyen.errors import adyen_decision_for
from billing.providers.adyen.responses import next_action, submit_result
from billing.providers.adyen.result_codes import RESULT_CODES, ResultHandling, handling_for
from billing.rails.results import Decision, NextActionType, SubmitOutcome, decision_for_outcome
from tests.adyen_contract_server import example, result_code_enum

MERCHANT_REFERENCE = "3f0e4b8e-2f4c-4e55-9f3c-6d8e1b2a7c90"
RETURN_URL = "https://shop.example/return"
PSP = "993617895204576J"

# Stated independently of the adapter's table, so a changed mapping fails here.
EXPECTED_OUTCOMES = {
    "Authorised": SubmitOutcome.SUCCEEDED,
    "Pending": SubmitOutcome.PENDING_SETTLEMENT,
    "Received": SubmitOutcome.PENDING_SETTLEMENT,
    "Success": SubmitOutcome.PENDING_SETTLEMENT,
    "IdentifyShopper": SubmitOutcome.REQUIRES_ACTION,
    "ChallengeShopper": SubmitOutcome.REQUIRES_ACTION,
    "RedirectShopper": SubmitOutcome.REQUIRES_ACTION,
    "PresentToShopper": SubmitOutcome.REQUIRES_ACTION,
    "Refused": SubmitOutcome.FAILED,
    "Error": SubmitOutcome.FAILED,
    "Cancelled": SubmitOutcome.FAILED,
    "AuthenticationFinished": SubmitOutcome.FAILED,
    "AuthenticationNotRequired": SubmitOutcome.FAILED,
    "PartiallyAuthorised": SubmitOutcome.UNKNOWN,
}


def _result(response: Any) -> Any:
    return submit_result(response, merchant_reference=MERCHANT_REFERENCE, return_url=RETURN_URL, http_status=200)


def test_table_decides_exactly_the_result_codes_of_the_v71_spec() -> None:
    # Given the enum of PaymentResponse.resultCode, read from Adyen's OpenAPI document
    enum = result_code_enum()
    # Then the adapter's table and this test's expectations hold each of its values, and nothing else
    assert len(enum) == len(set(enum))
    assert set(RESULT_CODES) == set(enum)
    assert set(EXPECTED_OUTCOMES) == set(enum)


@pytest.mark.parametrize("result_code", result_code_enum())
def test_every_result_code_gives_its_outcome_and_the_decision_table_agrees(result_code: str) -> None:
    # When Adyen answers with this resultCode
    result = _result({"resultCode": result_code, "pspReference": PSP})
    # Then the outcome is the expected one
    assert result.outcome is EXPECTED_OUTCOMES[result_code]
    # And an error outcome's code is one decision_for classifies the same way
    if result.error is not None:
        assert adyen_decision_for(result.error.code) is decision_for_outcome(result.outcome)
        assert result.error.retryable is (adyen_decision_for(result.error.code) is Decision.RETRY)


@pytest.mark.parametrize("result_code", ["AuthorisedV2", "authorised", "", None, 7])
def test_result_code_outside_the_enum_is_unknown_and_reconciled(result_code: object) -> None:
    result = _result({"resultCode": result_code, "pspReference": PSP})
    assert handling_for(result_code) is None
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert result.error_code == "unexpected_result_code"
    assert adyen_decision_for("unexpected_result_code") is Decision.RECONCILE_LATER


@pytest.mark.parametrize("response", [[], {}, {"pspReference": PSP}, "Authorised"])
def test_answer_that_is_no_payment_response_is_unknown(response: object) -> None:
    result = _result(response)
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert result.error_code == "unexpected_response"


def test_refused_keeps_adyens_refusal_reason_code_and_text() -> None:
    # Given a refusal as Adyen words it (refusal reason 12: Not enough balance)
    response = {**example("post-payments-card-direct-200"), "resultCode": "Refused"}
    response |= {"refusalReason": "Not enough balance", "refusalReasonCode": "12"}
    # When mapped
    result = _result(response)
    # Then the charge failed for good with Adyen's code and words, and the refused payment is named
    assert result.outcome is SubmitOutcome.FAILED
    assert result.error_code == "refused_12"
    assert result.error is not None
    assert result.error.message == "Not enough balance"
    assert result.provider_reference == PSP
    assert adyen_decision_for("refused_12") is Decision.FAIL


def test_refused_without_a_reason_code_is_plain_refused() -> None:
    result = _result({"resultCode": "Refused", "pspReference": PSP})
    assert result.error_code == "refused"
    assert result.error is not None
    assert result.error.message == "refused by Adyen"


def test_error_result_is_a_final_failure_with_adyens_reason() -> None:
    result = _result({"resultCode": "Error", "refusalReason": "Acquirer Error", "refusalReasonCode": "4"})
    assert result.outcome is SubmitOutcome.FAILED
    assert result.error_code == "error_4"
    assert result.error is not None
    assert result.error.message == "Acquirer Error"


def test_cancelled_fails_with_code_cancelled() -> None:
    result = _result({"resultCode": "Cancelled", "pspReference": PSP})
    assert result.outcome is SubmitOutcome.FAILED
    assert result.error_code == "cancelled"


def test_authorised_without_a_psp_reference_is_not_taken_as_charged() -> None:
    # A success nobody can refund or match to a webhook: reconciled instead of recorded under our own reference.
    result = _result({"resultCode": "Authorised"})
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert result.error_code == "unexpected_response"


def test_partial_authorisation_is_reconciled_with_the_amount_in_the_message() -> None:
    result = _result(
        {"resultCode": "PartiallyAuthorised", "pspReference": PSP, "amount": {"value": 500, "currency": "EUR"}}
    )
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert result.error is not None
    assert "500 EUR" in result.error.message
    assert PSP in result.error.message
    assert result.request_id == PSP


def test_charge_waiting_for_the_shopper_without_psp_reference_is_named_by_our_reference() -> None:
    # Given the spec's 3-D Secure 2 answer, which has no pspReference
    response = example("post-payments-card-3d-secure-2-web-200")
    assert "pspReference" not in response
    # Then the charge is named by the reference we sent (the execution id)
    result = _result(response)
    assert result.outcome is SubmitOutcome.REQUIRES_ACTION
    assert result.provider_reference == MERCHANT_REFERENCE
    assert result.next_action is not None
    assert result.next_action.type is NextActionType.USE_PROVIDER_SDK


def test_get_redirect_is_a_url_to_send_the_customer_to_with_our_return_url() -> None:
    action = example("post-payments-card-3d-secure-redirect-200")["action"]
    assert action["type"] == "redirect"
    got = next_action(action, return_url=RETURN_URL)
    assert got.type is NextActionType.REDIRECT_TO_URL
    assert got.url == action["url"]
    assert got.return_url == RETURN_URL


@pytest.mark.parametrize(
    "action",
    [
        {"type": "redirect", "method": "POST", "url": "https://issuer.example/acs", "data": {"PaReq": "x"}},
        {"type": "redirect"},
        {"type": "threeDS2", "subtype": "challenge", "token": "eyJ0"},
        {"type": "voucher", "url": "https://voucher.example/1"},
        None,
    ],
)
def test_anything_but_a_get_redirect_is_left_to_adyens_client_components(action: object) -> None:
    got = next_action(action, return_url=RETURN_URL)
    assert got.type is NextActionType.USE_PROVIDER_SDK
    assert got.url is None
    assert got.return_url == RETURN_URL


def test_every_handling_is_used_by_some_result_code() -> None:
    assert set(RESULT_CODES.values()) == set(ResultHandling)
