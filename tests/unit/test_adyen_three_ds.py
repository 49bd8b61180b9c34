"""3-D Secure at Adyen: what each ThreeDSecureInstruction adds to a /payments body, and what Adyen's answers
(PaymentResponse with its additionalData, as Checkout v71 documents them) report of the authentication it ran."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID

import pytest

from billing.domain.execution import PaymentRail
from billing.providers.adyen.request_bodies import payment_request
from billing.providers.adyen.responses import submit_result
from billing.providers.adyen.three_ds import (
    SCA_EXEMPTIONS,
    authentication_for,
    mpi_data,
    origin_of,
    three_ds_fields,
)
from billing.rails.ports import ChargeInitiator, ProviderCharge
from billing.rails.results import SubmitOutcome
from billing.rails.three_ds import (
    NO_THREE_DS,
    AuthenticationData,
    Exemption,
    ProviderAuthentication,
    ThreeDSecureInstruction,
    ThreeDSecureMode,
)
from tests.adyen_contract_server import example, load_spec

RETURN_URL = "https://shop.example/checkout/return?order=7"
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
CHARGE = ProviderCharge(
    tenant_id=UUID("7d1f0c3a-5b2e-4f60-8a9b-0c1d2e3f4a5b"),
    execution_id=UUID("3f0e4b8e-2f4c-4e55-9f3c-6d8e1b2a7c90"),
    amount=1999,
    currency="EUR",
    rail=PaymentRail.CARD,
    payment_instrument_id="M5N7TQ4TG5PFWR50",
    customer_reference="contract-42",
)


def exempt(exemption: Exemption) -> ThreeDSecureInstruction:
    return ThreeDSecureInstruction(ThreeDSecureMode.EXEMPT, exemption=exemption)


def authorised(**additional_data: str) -> dict[str, Any]:
    """The spec's Authorised answer with these additionalData entries added."""
    answer = example("post-payments-card-direct-200")
    answer["additionalData"] = {**answer["additionalData"], **additional_data}
    return answer


# --- what is sent ------------------------------------------------------------------------------------------------


def test_no_instruction_adds_nothing() -> None:
    assert three_ds_fields(NO_THREE_DS, return_url=RETURN_URL) == {}
    body = payment_request(CHARGE, merchant_account="M", return_url=RETURN_URL)
    assert not {"authenticationData", "additionalData", "mpiData", "channel", "origin"} & set(body)


def test_request_always_attempts_authentication_in_the_browser_channel() -> None:
    body = payment_request(replace(CHARGE, three_ds=REQUEST), merchant_account="M", return_url=RETURN_URL)
    assert body["authenticationData"] == {"attemptAuthentication": "always"}
    assert (body["channel"], body["origin"]) == ("Web", "https://shop.example")
    # The existing fields stay as they were.
    assert body["returnUrl"] == RETURN_URL
    assert body["shopperInteraction"] == "Ecommerce"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://shop.example/checkout/return", "https://shop.example"),
        ("https://shop.example:8443/r", "https://shop.example:8443"),
        ("http://localhost:3000/return", "http://localhost:3000"),
        ("myapp://return", None),
        (f"https://{'a' * 80}.example/r", None),
    ],
)
def test_origin_is_the_return_urls_web_origin(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_request_without_a_web_origin_leaves_origin_out() -> None:
    assert "origin" not in three_ds_fields(REQUEST, return_url="myapp://return")


@pytest.mark.parametrize(
    ("exemption", "sca_exemption"),
    [(Exemption.LOW_VALUE, "lowValue"), (Exemption.TRANSACTION_RISK_ANALYSIS, "transactionRiskAnalysis")],
)
def test_an_exemption_is_asked_for_in_the_authorisation_without_authenticating(
    exemption: Exemption, sca_exemption: str
) -> None:
    assert three_ds_fields(exempt(exemption), return_url=RETURN_URL) == {
        "authenticationData": {"attemptAuthentication": "never"},
        "additionalData": {"scaExemption": sca_exemption},
    }


def test_merchant_initiated_is_out_of_scope_by_cont_auth_and_adds_nothing() -> None:
    mit = replace(CHARGE, three_ds=exempt(Exemption.MERCHANT_INITIATED), initiator=ChargeInitiator.MERCHANT)
    body = payment_request(mit, merchant_account="M", return_url=RETURN_URL)
    assert body["shopperInteraction"] == "ContAuth"
    assert not {"authenticationData", "additionalData"} & set(body)


def test_every_sca_exemption_sent_is_one_the_spec_documents() -> None:
    description = load_spec()["components"]["schemas"]["AdditionalData3DSecure"]["properties"]["scaExemption"]
    assert set(SCA_EXEMPTIONS) == set(Exemption)
    for value in filter(None, SCA_EXEMPTIONS.values()):
        assert f"**{value}**" in description["description"]


def test_an_engine_authentication_goes_as_mpi_data() -> None:
    assert three_ds_fields(AUTHENTICATED, return_url=RETURN_URL) == {
        "mpiData": {
            "cavv": CAVV,
            "eci": "05",
            "threeDSVersion": "2.2.0",
            "dsTransID": DS_TRANS_ID,
            "directoryResponse": "Y",
            "authenticationResponse": "Y",
        }
    }


def test_mpi_data_leaves_out_what_the_authentication_lacks_or_the_enums_refuse() -> None:
    # No dsTransID; "I" is a directoryResponse (ARes) value, not an authenticationResponse (RReq) one.
    informational = replace(ENGINE_AUTHENTICATION, trans_status="I", ds_trans_id=None)
    mpi = mpi_data(informational)
    assert "dsTransID" not in mpi
    assert mpi["directoryResponse"] == "I"
    assert "authenticationResponse" not in mpi


def test_the_cavv_is_not_in_the_charges_repr() -> None:
    assert CAVV not in repr(replace(CHARGE, three_ds=AUTHENTICATED))


# --- what Adyen reports ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "result_code"),
    [
        ("post-payments-card-3d-secure-2-web-200", "IdentifyShopper"),
        ("post-payments-card-3d-secure-redirect-200", "RedirectShopper"),
    ],
)
def test_a_payment_waiting_for_the_shoppers_authentication_is_trans_status_c(name: str, result_code: str) -> None:
    answer = example(name)
    assert answer["resultCode"] == result_code
    assert authentication_for(answer) == ProviderAuthentication(trans_status="C")


def test_a_challenge_is_trans_status_c_with_the_challenge_flow() -> None:
    answer = {**example("post-payments-card-3d-secure-2-web-200"), "resultCode": "ChallengeShopper"}
    assert authentication_for(answer) == ProviderAuthentication(trans_status="C", flow="challenge")


def test_an_authenticated_authorisation_is_reported_in_full() -> None:
    answer = authorised(
        threeDOffered="true",
        threeDOfferedResponse="C",
        threeDAuthenticated="true",
        threeDAuthenticatedResponse="Y",
        liabilityShift="true",
        eci="05",
        threeDSVersion="2.2.0",
        dsTransID=DS_TRANS_ID,
        cavv=CAVV,
    )
    found = authentication_for(answer)
    assert found == ProviderAuthentication(
        trans_status="Y",
        eci="05",
        message_version="2.2.0",
        liability_shift=True,
        ds_trans_id=DS_TRANS_ID,
        authentication_value_present=True,
    )
    # The cavv itself is never kept.
    assert CAVV not in repr(found)


@pytest.mark.parametrize(
    ("additional", "trans_status"),
    [
        ({"threeDAuthenticated": "true"}, "Y"),
        ({"threeDAuthenticated": "false", "threeDAuthenticatedResponse": "N"}, "N"),
        ({"threeDAuthenticated": "false", "threeDAuthenticatedResponse": "A"}, "A"),
        ({"threeDAuthenticated": "false", "threeDAuthenticatedResponse": "R"}, "R"),
        ({"threeDAuthenticated": "false", "threeDAuthenticatedResponse": "U"}, "U"),
        # Offered, not authenticated, and no raw result: a failure, an attempt or an exemption, so not guessed.
        ({"threeDOffered": "true", "threeDAuthenticated": "false"}, None),
        ({"threeDOffered": "false", "threeDAuthenticated": "false"}, None),
    ],
)
def test_the_trans_status_is_the_raw_result_or_only_what_the_flags_make_certain(
    additional: dict[str, str], trans_status: str | None
) -> None:
    found = authentication_for(authorised(**additional))
    assert found is not None
    assert found.trans_status == trans_status


def test_an_exemption_adyen_asked_for_is_reported_when_nobody_authenticated() -> None:
    found = authentication_for(
        authorised(
            threeDOffered="false", threeDAuthenticated="false", liabilityShift="false", scaExemptionRequested="lowValue"
        )
    )
    assert found is not None
    assert (found.exemption, found.liability_shift, found.trans_status) == ("lowValue", False, None)
    # Authenticated after all (the issuer refused the exemption): no exemption applied.
    challenged = authentication_for(
        authorised(threeDAuthenticated="true", scaExemptionRequested="transactionRiskAnalysis")
    )
    assert challenged is not None
    assert challenged.exemption is None


def test_not_applicable_values_are_no_values() -> None:
    found = authentication_for(authorised(threeDAuthenticated="false", eci="N/A", cavv="N/A"))
    assert found is not None
    assert (found.eci, found.authentication_value_present) == (None, False)


def test_an_answer_without_three_d_secure_keys_reports_nothing() -> None:
    assert authentication_for(example("post-payments-card-direct-200")) is None
    assert authentication_for({"resultCode": "Authorised", "pspReference": "X"}) is None


def test_submit_result_carries_the_authentication() -> None:
    answer = authorised(threeDAuthenticated="true", eci="05", liabilityShift="true")
    result = submit_result(answer, merchant_reference="ref", return_url=RETURN_URL, http_status=200)
    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert result.authentication is not None
    assert (result.authentication.trans_status, result.authentication.liability_shift) == ("Y", True)
    refused = {**authorised(threeDAuthenticated="false", threeDAuthenticatedResponse="N"), "resultCode": "Refused"}
    failed = submit_result(refused, merchant_reference="ref", return_url=RETURN_URL, http_status=200)
    assert failed.outcome is SubmitOutcome.FAILED
    assert failed.authentication is not None
    assert failed.authentication.trans_status == "N"
