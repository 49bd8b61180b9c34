"""AdyenProvider's 3-D Secure through the real Adyen SDK against the local server that holds every exchange to
Checkout v71's spec: every instruction's /payments body is valid by the document, and what the answers (schema-valid,
from the spec's examples) say of 3-D Secure reaches the SubmitResult."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from billing.rails.ports import ChargeInitiator
from billing.rails.results import SubmitOutcome
from billing.rails.three_ds import (
    AuthenticationData,
    Exemption,
    ProviderAuthentication,
    ThreeDSecureInstruction,
    ThreeDSecureMode,
)
from tests.adyen_contract_server import AdyenContractServer, Reply, example, request_violations
from tests.contract.test_adyen_contract import PAYMENTS, assert_clean, card_charge, key_of, provider

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


@pytest.fixture
def adyen() -> Iterator[AdyenContractServer]:
    with AdyenContractServer() as server:
        yield server
        assert server.request_violations == []


def exempt(exemption: Exemption) -> ThreeDSecureInstruction:
    return ThreeDSecureInstruction(ThreeDSecureMode.EXEMPT, exemption=exemption)


def sent_with(adyen: AdyenContractServer, instruction: ThreeDSecureInstruction, **overrides: Any) -> dict[str, Any]:
    """The /payments body the adapter sent for a charge with this instruction, after checking it was valid."""
    adyen.reply_with(Reply.example("post-payments-card-direct-200"))
    charge = card_charge(three_ds=instruction, **overrides)
    provider(adyen).submit(charge, key_of(charge))
    assert_clean(adyen, PAYMENTS, key_of(charge))
    body: dict[str, Any] = adyen.only_request().body
    return body


def still_valid_if(adyen: AdyenContractServer, change: dict[str, Any]) -> bool:
    """Whether the last request's body, with `change` merged into its top level, would still be valid by the spec."""
    sent = adyen.only_request()
    body = {**copy.deepcopy(sent.body), **change}
    return request_violations("POST", sent.path, sent.headers, json.dumps(body).encode()) == []


# --- what is sent -----------------------------------------------------------------------------------------------


def test_request_is_valid_and_the_spec_would_catch_a_wrong_value(adyen: AdyenContractServer) -> None:
    body = sent_with(adyen, REQUEST)
    assert body["authenticationData"] == {"attemptAuthentication": "always"}
    assert (body["channel"], body["origin"]) == ("Web", "https://shop.example")
    # The server checks these fields: a value outside their enums would have been a violation.
    assert not still_valid_if(adyen, {"authenticationData": {"attemptAuthentication": "sometimes"}})
    assert not still_valid_if(adyen, {"channel": "Browser"})


@pytest.mark.parametrize(
    ("exemption", "sca_exemption"),
    [(Exemption.LOW_VALUE, "lowValue"), (Exemption.TRANSACTION_RISK_ANALYSIS, "transactionRiskAnalysis")],
)
def test_an_exemption_request_is_valid(adyen: AdyenContractServer, exemption: Exemption, sca_exemption: str) -> None:
    body = sent_with(adyen, exempt(exemption))
    assert body["additionalData"] == {"scaExemption": sca_exemption}
    assert body["authenticationData"] == {"attemptAuthentication": "never"}
    # additionalData holds strings only.
    assert not still_valid_if(adyen, {"additionalData": {"scaExemption": 1}})


def test_a_merchant_initiated_exemption_is_a_cont_auth_charge_and_nothing_more(adyen: AdyenContractServer) -> None:
    body = sent_with(adyen, exempt(Exemption.MERCHANT_INITIATED), initiator=ChargeInitiator.MERCHANT)
    assert (body["shopperInteraction"], body["recurringProcessingModel"]) == ("ContAuth", "Subscription")
    assert not {"authenticationData", "additionalData", "mpiData"} & set(body)


def test_an_engine_authentication_is_valid_mpi_data(adyen: AdyenContractServer) -> None:
    body = sent_with(adyen, AUTHENTICATED)
    assert body["mpiData"] == {
        "cavv": CAVV,
        "eci": "05",
        "threeDSVersion": "2.2.0",
        "dsTransID": DS_TRANS_ID,
        "directoryResponse": "Y",
        "authenticationResponse": "Y",
    }
    # ThreeDSecureData's enums are checked: an authenticationResponse of "C" is a violation.
    assert not still_valid_if(adyen, {"mpiData": {**body["mpiData"], "authenticationResponse": "C"}})


# --- what Adyen reports -----------------------------------------------------------------------------------------


def test_an_authenticated_authorisation_reports_its_authentication(adyen: AdyenContractServer) -> None:
    answer = example("post-payments-card-direct-200")
    answer["additionalData"] |= {
        "threeDOffered": "true",
        "threeDAuthenticated": "true",
        "threeDAuthenticatedResponse": "Y",
        "liabilityShift": "true",
        "eci": "05",
        "threeDSVersion": "2.2.0",
        "dsTransID": DS_TRANS_ID,
        "cavv": CAVV,
    }
    adyen.reply_with(Reply.json(answer))
    charge = card_charge(three_ds=REQUEST)

    result = provider(adyen).submit(charge, key_of(charge))

    assert adyen.violations == []
    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert result.authentication == ProviderAuthentication(
        trans_status="Y",
        eci="05",
        message_version="2.2.0",
        liability_shift=True,
        ds_trans_id=DS_TRANS_ID,
        authentication_value_present=True,
    )


@pytest.mark.parametrize(
    ("answer", "authentication"),
    [
        (example("post-payments-card-3d-secure-2-web-200"), ProviderAuthentication(trans_status="C")),
        (
            {**example("post-payments-card-3d-secure-2-web-200"), "resultCode": "ChallengeShopper"},
            ProviderAuthentication(trans_status="C", flow="challenge"),
        ),
        (example("post-payments-card-3d-secure-redirect-200"), ProviderAuthentication(trans_status="C")),
    ],
    ids=["IdentifyShopper", "ChallengeShopper", "RedirectShopper"],
)
def test_a_payment_waiting_for_the_shopper_reports_trans_status_c(
    adyen: AdyenContractServer, answer: dict[str, Any], authentication: ProviderAuthentication
) -> None:
    adyen.reply_with(Reply.json(answer))
    charge = card_charge(three_ds=REQUEST)

    result = provider(adyen).submit(charge, key_of(charge))

    assert adyen.violations == []
    assert result.outcome is SubmitOutcome.REQUIRES_ACTION
    assert result.authentication == authentication


def test_a_refused_exemption_reports_what_adyen_asked_for(adyen: AdyenContractServer) -> None:
    answer = {
        **example("post-payments-card-direct-200"),
        "resultCode": "Refused",
        "refusalReason": "Authentication required",
        "refusalReasonCode": "38",
    }
    answer["additionalData"] |= {
        "threeDOffered": "false",
        "threeDAuthenticated": "false",
        "liabilityShift": "false",
        "scaExemptionRequested": "lowValue",
    }
    adyen.reply_with(Reply.json(answer))
    charge = card_charge(three_ds=exempt(Exemption.LOW_VALUE))

    result = provider(adyen).submit(charge, key_of(charge))

    assert adyen.violations == []
    assert (result.outcome, result.error_code) == (SubmitOutcome.FAILED, "refused_38")
    assert result.authentication == ProviderAuthentication(liability_shift=False, exemption="lowValue")
