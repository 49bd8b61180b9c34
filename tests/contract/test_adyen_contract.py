"""AdyenProvider through the real Adyen SDK against a local server that holds every exchange to Checkout v71's spec.

Each test scripts the server's answers (spec examples, or schema-valid variations of them), lets the adapter talk to
it over HTTP, and asserts both what the adapter concluded and that every request it sent was valid by the spec.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from uuid import UUID, uuid4

import pytest

from billing.domain.errors import ProviderUnavailable, StatusNotPollable
from billing.domain.execution import PaymentRail
from billing.providers.adyen import AdyenCredentials, AdyenProvider
from billing.providers.adyen.idempotency import adyen_idempotency_key
from billing.rails.ports import ChargeInitiator, ProviderCharge, ProviderRefund
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    Decision,
    NextActionType,
    RefundOutcome,
    StatusOutcome,
    SubmitOutcome,
    decision_for_outcome,
)
from tests.adyen_contract_server import (
    AdyenContractServer,
    Reply,
    example,
    request_violations,
    response_example_names,
    result_code_enum,
)
from tests.unit.test_adyen_result_codes import EXPECTED_OUTCOMES

PLATFORM = AdyenCredentials(api_key="test_platform_api_key_0001", merchant_account="PlatformECOM")
TENANT_ACCOUNT = AdyenCredentials(api_key="test_tenant_api_key_0002", merchant_account="TenantOwnECOM")
RETURN_URL = "https://shop.example/adyen/return"
PAYMENTS = "post-payments"
REFUNDS = "post-payments-paymentPspReference-refunds"
PSP_CANCELS = "post-payments-paymentPspReference-cancels"
STANDALONE_CANCELS = "post-cancels"
OVERRIDE_TENANT = UUID("5a0c6f1e-8d2b-4c7a-9e3f-1b2d4c6e8f00")


@pytest.fixture
def adyen() -> Iterator[AdyenContractServer]:
    with AdyenContractServer() as server:
        yield server
        # Whatever a test asserts, nothing the adapter sent may break the spec.
        assert server.request_violations == []


def credentials(tenant_id: UUID | None) -> AdyenCredentials:
    return TENANT_ACCOUNT if tenant_id == OVERRIDE_TENANT else PLATFORM


def provider(server: AdyenContractServer, *, timeout_seconds: float = 10.0) -> AdyenProvider:
    return AdyenProvider(credentials, return_url=RETURN_URL, api_base=server.base_url, timeout_seconds=timeout_seconds)


def card_charge(**overrides: object) -> ProviderCharge:
    fields: dict[str, object] = {
        "tenant_id": uuid4(),
        "execution_id": uuid4(),
        "amount": 1999,
        "currency": "EUR",
        "rail": PaymentRail.CARD,
        "payment_instrument_id": "M5N7TQ4TG5PFWR50",
        "customer_reference": "contract-42",
    }
    fields.update(overrides)
    return ProviderCharge(**fields)  # type: ignore[arg-type]


def key_of(charge: ProviderCharge) -> str:
    return f"{charge.tenant_id}:{charge.execution_id}"


def service_error(status: int, error_code: str, message: str, error_type: str = "validation") -> dict[str, object]:
    return {"status": status, "errorCode": error_code, "message": message, "errorType": error_type}


def assert_clean(server: AdyenContractServer, operation_id: str, idempotency_key: str) -> None:
    """One request, valid by the spec, to the expected operation under v71, with the derived Idempotency-Key."""
    assert server.violations == []
    sent = server.only_request()
    assert sent.operation_id == operation_id
    assert sent.path.startswith("/v71/")
    assert sent.header("Idempotency-Key") == adyen_idempotency_key(idempotency_key)


# --- /payments: result codes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(response_example_names("/payments", "post", "200")))
def test_every_spec_example_answer_to_payments_maps_to_its_outcome(adyen: AdyenContractServer, name: str) -> None:
    # Given one of the spec's example answers to /payments (Authorised, IdentifyShopper, RedirectShopper)
    answer = example(name)
    adyen.reply_with(Reply.json(answer))
    charge = card_charge()
    # When the adapter charges
    result = provider(adyen).submit(charge, key_of(charge))
    # Then the request was valid and the outcome is the one the resultCode calls for
    assert_clean(adyen, PAYMENTS, key_of(charge))
    assert result.outcome is EXPECTED_OUTCOMES[answer["resultCode"]]
    assert result.provider_reference == answer.get("pspReference", str(charge.execution_id))


def _answer_for(result_code: str) -> dict[str, object]:
    """A schema-valid /payments answer with this resultCode, from the spec's examples where it has one."""
    match result_code:
        case "IdentifyShopper":
            return example("post-payments-card-3d-secure-2-web-200")
        case "ChallengeShopper":
            answer = example("post-payments-card-3d-secure-2-web-200")
            answer["action"] = {**answer["action"], "subtype": "challenge"}
            return {**answer, "resultCode": "ChallengeShopper"}
        case "RedirectShopper":
            return example("post-payments-card-3d-secure-redirect-200")
        case "Refused" | "Error":
            answer = example("post-payments-card-direct-200")
            return {
                **answer,
                "resultCode": result_code,
                "refusalReason": "Not enough balance",
                "refusalReasonCode": "12",
            }
        case "PresentToShopper":
            voucher = {"type": "voucher", "paymentMethodType": "boletobancario", "url": "https://voucher.example/1"}
            return {"resultCode": "PresentToShopper", "pspReference": "PSPVOUCHER000001", "action": voucher}
        case "PartiallyAuthorised":
            partial = {"value": 500, "currency": "EUR"}
            return {**example("post-payments-card-direct-200"), "resultCode": result_code, "amount": partial}
        case _:
            return {**example("post-payments-card-direct-200"), "resultCode": result_code}


@pytest.mark.parametrize("result_code", result_code_enum())
def test_every_result_code_of_the_enum_through_the_sdk(adyen: AdyenContractServer, result_code: str) -> None:
    # Given a schema-valid answer carrying this resultCode (the server refuses to send an invalid one)
    adyen.reply_with(Reply.json(_answer_for(result_code)))
    charge = card_charge()
    # When the adapter charges
    result = provider(adyen).submit(charge, key_of(charge))
    # Then the exchange was valid, and an error outcome's code gets the same decision from decision_for
    assert_clean(adyen, PAYMENTS, key_of(charge))
    assert result.outcome is EXPECTED_OUTCOMES[result_code]
    if result.error is not None:
        assert provider(adyen).decision_for(result.error.code) is decision_for_outcome(result.outcome)


def test_refused_charge_fails_with_adyens_refusal_reason(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.json(_answer_for("Refused")))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.FAILED
    assert result.error_code == "refused_12"
    assert result.error is not None
    assert result.error.message == "Not enough balance"
    assert result.provider_reference == example("post-payments-card-direct-200")["pspReference"]


def test_three_ds2_challenge_is_left_to_adyens_components(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.json(_answer_for("ChallengeShopper")))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.REQUIRES_ACTION
    # No pspReference before authorisation: the charge is named by the execution id we sent as reference.
    assert result.provider_reference == str(charge.execution_id)
    assert result.next_action is not None
    assert result.next_action.type is NextActionType.USE_PROVIDER_SDK
    assert result.next_action.return_url == RETURN_URL
    # Adyen's components need the action as Adyen sent it; it is handed over, and the timeline keeps none of it.
    assert result.next_action.sdk_data == _answer_for("ChallengeShopper")["action"]
    assert "sdk_data" not in result.next_action.to_stored()
    assert "token" not in repr(result.next_action)


def test_redirect_sends_the_customer_to_adyens_url(adyen: AdyenContractServer) -> None:
    answer = example("post-payments-card-3d-secure-redirect-200")
    adyen.reply_with(Reply.json(answer))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.REQUIRES_ACTION
    assert result.next_action is not None
    assert result.next_action.type is NextActionType.REDIRECT_TO_URL
    assert result.next_action.url == answer["action"]["url"]
    assert result.action_url == answer["action"]["url"]
    assert result.next_action.return_url == RETURN_URL


@pytest.mark.parametrize("result_code", ["Pending", "Received"])
def test_pending_and_received_wait_for_the_webhook(adyen: AdyenContractServer, result_code: str) -> None:
    adyen.reply_with(Reply.json(_answer_for(result_code)))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.PENDING_SETTLEMENT
    assert result.provider_reference == example("post-payments-card-direct-200")["pspReference"]


def test_unknown_response_fields_are_tolerated(adyen: AdyenContractServer) -> None:
    # Given an Authorised answer with fields no v71 schema knows (as a later version might add)
    extra = {"futureRiskScore": {"value": 12}, "newTopLevelFlag": True}
    adyen.reply_with(Reply.json(example("post-payments-card-direct-200"), extra_fields=extra))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert adyen.violations == []


# --- /payments: what is sent --------------------------------------------------------------------------------------


def test_customer_initiated_stored_card_request(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.example("post-payments-card-direct-200"))
    charge = card_charge(amount=1234, currency="USD")
    provider(adyen).submit(charge, key_of(charge))
    assert_clean(adyen, PAYMENTS, key_of(charge))
    body = adyen.only_request().body
    assert body["amount"] == {"value": 1234, "currency": "USD"}
    assert body["reference"] == str(charge.execution_id)
    assert body["merchantAccount"] == "PlatformECOM"
    assert body["paymentMethod"] == {"type": "scheme", "storedPaymentMethodId": "M5N7TQ4TG5PFWR50"}
    assert body["shopperReference"] == "contract-42"
    assert (body["shopperInteraction"], body["recurringProcessingModel"]) == ("Ecommerce", "CardOnFile")
    assert body["returnUrl"] == RETURN_URL
    assert body["metadata"] == {"tenant_id": str(charge.tenant_id), "execution_id": str(charge.execution_id)}


def test_merchant_initiated_renewal_request(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.example("post-payments-subscription-first-transaction-200"))
    charge = card_charge(initiator=ChargeInitiator.MERCHANT)
    result = provider(adyen).submit(charge, key_of(charge))
    assert_clean(adyen, PAYMENTS, key_of(charge))
    body = adyen.only_request().body
    assert (body["shopperInteraction"], body["recurringProcessingModel"]) == ("ContAuth", "Subscription")
    assert result.outcome is SubmitOutcome.SUCCEEDED


def test_zero_decimal_amount_is_sent_in_minor_units_as_is(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.example("post-payments-card-direct-200"))
    charge = card_charge(amount=5000, currency="JPY")
    provider(adyen).submit(charge, key_of(charge))
    assert adyen.only_request().body["amount"] == {"value": 5000, "currency": "JPY"}


def test_api_key_is_sent_as_the_spec_says_and_tenant_override_uses_its_own_account(
    adyen: AdyenContractServer,
) -> None:
    adyen.reply_with(Reply.example("post-payments-card-direct-200"))
    charge = card_charge(tenant_id=OVERRIDE_TENANT)
    provider(adyen).for_tenant(OVERRIDE_TENANT).submit(charge, key_of(charge))
    assert_clean(adyen, PAYMENTS, key_of(charge))
    sent = adyen.only_request()
    assert sent.header("X-API-Key") == TENANT_ACCOUNT.api_key
    assert sent.body["merchantAccount"] == "TenantOwnECOM"


def test_resubmission_carries_the_same_idempotency_key(adyen: AdyenContractServer) -> None:
    # Given a first attempt Adyen failed transiently, then the answer Adyen replays for the key
    transient = service_error(500, "905", "Payment details are not supported", "configuration")
    adyen.reply_with(
        Reply.json(transient, status=500, headers={"Transient-Error": "true"}),
        Reply.example("post-payments-card-direct-200"),
    )
    charge = card_charge()
    adyen_provider = provider(adyen)
    first = adyen_provider.submit(charge, key_of(charge))
    second = adyen_provider.submit(replace(charge, attempt=2), key_of(charge))
    # Then the first was safe to resend, and both requests carried one key
    assert first.outcome is SubmitOutcome.TRANSIENT_ERROR
    assert first.error_code == "transient_http_500_905"
    assert second.outcome is SubmitOutcome.SUCCEEDED
    keys = {sent.header("Idempotency-Key") for sent in adyen.requests}
    assert keys == {adyen_idempotency_key(key_of(charge))}
    assert adyen.violations == []


# --- /payments: errors and transport ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "example_name", "outcome", "code"),
    [
        (400, "generic-400", SubmitOutcome.FAILED, "http_400_702"),
        (401, "generic-401", SubmitOutcome.TRANSIENT_ERROR, "http_401_000"),
        (403, "generic-403", SubmitOutcome.TRANSIENT_ERROR, "http_403_901"),
        (422, "generic-422", SubmitOutcome.FAILED, "http_422_14_030"),
        (500, "generic-500", SubmitOutcome.UNKNOWN, "http_500_905"),
    ],
)
def test_spec_error_answers_map_to_their_decision(
    adyen: AdyenContractServer, status: int, example_name: str, outcome: SubmitOutcome, code: str
) -> None:
    # Given the spec's example ServiceError for this status
    answer = example(example_name)
    adyen.reply_with(Reply.json(answer, status=status))
    charge = card_charge()
    # When the adapter charges
    result = provider(adyen).submit(charge, key_of(charge))
    # Then the outcome follows the status, with Adyen's code, words and reference kept
    assert_clean(adyen, PAYMENTS, key_of(charge))
    assert result.outcome is outcome
    assert result.error is not None
    assert (result.error.code, result.error.http_status, result.error.message) == (code, status, answer["message"])
    assert result.error.request_id == answer.get("pspReference")
    # And the SDK did not retry on its own
    assert len(adyen.requests) == 1


def test_request_still_in_progress_under_the_key_is_reconciled(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.json(service_error(422, "704", "request already processed or in progress"), status=422))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert result.error_code == "http_422_704"


@pytest.mark.parametrize(("status", "outcome"), [(429, SubmitOutcome.TRANSIENT_ERROR), (503, SubmitOutcome.UNKNOWN)])
def test_statuses_the_spec_does_not_list_are_still_decided(
    adyen: AdyenContractServer, status: int, outcome: SubmitOutcome
) -> None:
    body = service_error(status, "0", "Too many requests" if status == 429 else "Service unavailable", "internal")
    adyen.reply_with(Reply.json(body, status=status, undocumented_status=True))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is outcome
    assert result.error is not None
    assert result.error.http_status == status
    assert adyen.violations == []


def test_read_timeout_after_sending_is_an_unknown_outcome(adyen: AdyenContractServer) -> None:
    # Given Adyen receives the request and never answers
    adyen.reply_with(Reply.hang())
    charge = card_charge()
    # When the adapter's read times out
    result = provider(adyen, timeout_seconds=0.2).submit(charge, key_of(charge))
    adyen.release()
    # Then the charge may exist: reconcile, never retry blindly or call it failed
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert result.error_code == OUTCOME_UNKNOWN_CODE
    assert provider(adyen).decision_for(OUTCOME_UNKNOWN_CODE) is Decision.RECONCILE_LATER
    assert_clean(adyen, PAYMENTS, key_of(charge))


def test_connection_dropped_after_sending_is_an_unknown_outcome(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.drop())
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.UNKNOWN
    assert result.error_code == OUTCOME_UNKNOWN_CODE
    assert len(adyen.requests) == 1


def test_connection_refused_is_retried_with_nothing_charged() -> None:
    # Given a port bound but not listening: connecting is refused, and no other process can take the port meanwhile
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        adyen_provider = AdyenProvider(credentials, return_url=RETURN_URL, api_base=f"http://127.0.0.1:{port}")
        charge = card_charge()
        result = adyen_provider.submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.TRANSIENT_ERROR
    assert result.error_code == "connection_failed"
    assert result.retryable is True


def test_error_results_never_carry_the_api_key(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.example("generic-401", status=401), Reply.drop())
    charge = card_charge()
    results = [provider(adyen).submit(charge, key_of(charge)) for _ in range(2)]
    assert all(PLATFORM.api_key not in repr(result) for result in results)


# --- the validator is live ----------------------------------------------------------------------------------------


def _valid_payment_body() -> dict[str, object]:
    return {
        "amount": {"value": 1000, "currency": "EUR"},
        "reference": str(uuid4()),
        "merchantAccount": "PlatformECOM",
        "paymentMethod": {"type": "scheme", "storedPaymentMethodId": "M5N7TQ4TG5PFWR50"},
        "returnUrl": RETURN_URL,
    }


HEADERS = {"Content-Type": "application/json", "X-API-Key": "k", "Idempotency-Key": str(uuid4())}


def test_validator_accepts_a_valid_payment_request() -> None:
    assert request_violations("POST", "/v71/payments", HEADERS, json.dumps(_valid_payment_body()).encode()) == []


@pytest.mark.parametrize(
    ("path", "headers", "change", "expected"),
    [
        ("/v71/payments", HEADERS, {"merchantAccount": None}, "InvalidRequestBody"),
        ("/v71/payments", HEADERS, {"amount": {"value": "10.00", "currency": "EUR"}}, "InvalidRequestBody"),
        ("/v71/payments", HEADERS, {"shopperInteraction": "Online"}, "InvalidRequestBody"),
        ("/v71/payments", HEADERS, {"unknownField": 1}, "InvalidRequestBody"),
        ("/v72/payments", HEADERS, {}, "ServerNotFound"),
        ("/v71/payments", {"Content-Type": "application/json", "Idempotency-Key": "k"}, {}, "SecurityValidationError"),
        ("/v71/payments", {"Content-Type": "application/json", "X-API-Key": "k"}, {}, "no Idempotency-Key"),
        ("/v71/payments", {**HEADERS, "Idempotency-Key": "k" * 65}, {}, "Adyen allows 64"),
    ],
)
def test_validator_catches_a_request_the_spec_rejects(
    path: str, headers: dict[str, str], change: dict[str, object], expected: str
) -> None:
    body = {key: value for key, value in {**_valid_payment_body(), **change}.items() if value is not None}
    violations = request_violations("POST", path, headers, json.dumps(body).encode())
    assert any(expected in violation for violation in violations), violations


def test_server_refuses_to_send_an_answer_the_spec_forbids(adyen: AdyenContractServer) -> None:
    # Given a test trying to hand the adapter a resultCode outside the enum
    adyen.reply_with(Reply.json({**example("post-payments-card-direct-200"), "resultCode": "Bogus"}))
    charge = card_charge()
    result = provider(adyen).submit(charge, key_of(charge))
    # Then the server records the violation and sends nothing the adapter could take for an answer
    assert any("violates the document" in violation for violation in adyen.violations)
    assert result.outcome is SubmitOutcome.UNKNOWN


def test_server_refuses_an_error_body_that_is_no_service_error(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.json({"error": "nope"}, status=429, undocumented_status=True))
    charge = card_charge()
    provider(adyen).submit(charge, key_of(charge))
    assert any("ServiceError" in violation for violation in adyen.violations)


# --- refunds ------------------------------------------------------------------------------------------------------


def _refund(**overrides: object) -> ProviderRefund:
    fields: dict[str, object] = {
        "tenant_id": uuid4(),
        "execution_id": uuid4(),
        "refund_id": uuid4(),
        "payment_reference": "993617894903480A",
        "amount": 2500,
        "currency": "EUR",
    }
    fields.update(overrides)
    return ProviderRefund(**fields)  # type: ignore[arg-type]


def _refund_key(refund: ProviderRefund) -> str:
    return f"{refund.tenant_id}:{refund.execution_id}:refund:{refund.refund_id}"


def test_refund_request_is_valid_and_pending_with_the_refunds_reference(adyen: AdyenContractServer) -> None:
    # Given the spec's refund answer
    answer = example("post-payments-paymentPspReference-refunds-refund-201")
    adyen.reply_with(Reply.json(answer, status=201))
    refund = _refund()
    # When the adapter refunds
    result = provider(adyen).refund(refund, _refund_key(refund))
    # Then the request was valid, for that payment, and the refund waits for its REFUND webhook
    assert_clean(adyen, REFUNDS, _refund_key(refund))
    sent = adyen.only_request()
    assert sent.path == "/v71/payments/993617894903480A/refunds"
    assert sent.body == {
        "amount": {"value": 2500, "currency": "EUR"},
        "merchantAccount": "PlatformECOM",
        "reference": str(refund.refund_id),
    }
    assert result.outcome is RefundOutcome.PENDING
    assert result.provider_reference == answer["pspReference"]


@pytest.mark.parametrize(
    ("reply", "outcome", "code"),
    [
        (Reply.example("generic-422", status=422), RefundOutcome.FAILED, "http_422_14_030"),
        (Reply.example("generic-401", status=401), RefundOutcome.TRANSIENT_ERROR, "http_401_000"),
        (Reply.example("generic-500", status=500), RefundOutcome.UNKNOWN, "http_500_905"),
        (Reply.drop(), RefundOutcome.UNKNOWN, OUTCOME_UNKNOWN_CODE),
    ],
)
def test_refund_errors(adyen: AdyenContractServer, reply: Reply, outcome: RefundOutcome, code: str) -> None:
    adyen.reply_with(reply)
    refund = _refund()
    result = provider(adyen).refund(refund, _refund_key(refund))
    assert result.outcome is outcome
    assert result.error_code == code
    assert adyen.violations == []


def test_refund_read_timeout_is_unknown(adyen: AdyenContractServer) -> None:
    adyen.reply_with(Reply.hang())
    refund = _refund()
    result = provider(adyen, timeout_seconds=0.2).refund(refund, _refund_key(refund))
    adyen.release()
    assert result.outcome is RefundOutcome.UNKNOWN


def test_refund_status_is_not_polled(adyen: AdyenContractServer) -> None:
    with pytest.raises(StatusNotPollable):
        provider(adyen).check_refund(_refund(), refund_reference="993617894906488A")
    assert adyen.requests == []


# --- cancels and status -------------------------------------------------------------------------------------------


def test_cancel_by_psp_reference_is_still_pending_until_the_cancellation_webhook(adyen: AdyenContractServer) -> None:
    answer = example("post-payments-paymentPspReference-cancels-cancel-with-psp-reference-201")
    adyen.reply_with(Reply.json(answer, status=201))
    check = provider(adyen).cancel("993617894903480A", "t:e:cancel")
    assert_clean(adyen, PSP_CANCELS, "t:e:cancel")
    assert adyen.only_request().path == "/v71/payments/993617894903480A/cancels"
    assert check.outcome is StatusOutcome.STILL_PENDING
    assert check.provider_reference == "993617894903480A"
    assert check.request_id == answer["pspReference"]


def test_cancel_of_a_charge_without_psp_reference_goes_by_our_reference(adyen: AdyenContractServer) -> None:
    execution_id = str(uuid4())
    answer = {**example("post-cancels-cancel-with-own-reference-201"), "paymentReference": execution_id}
    adyen.reply_with(Reply.json(answer, status=201))
    check = provider(adyen).cancel(execution_id, "t:e:cancel")
    assert_clean(adyen, STANDALONE_CANCELS, "t:e:cancel")
    assert adyen.only_request().body == {"merchantAccount": "PlatformECOM", "paymentReference": execution_id}
    assert check.outcome is StatusOutcome.STILL_PENDING
    assert check.provider_reference == execution_id


@pytest.mark.parametrize(
    "reply", [Reply.example("generic-500", status=500), Reply.example("generic-422", status=422), Reply.drop()]
)
def test_cancel_that_adyen_did_not_confirm_raises_provider_unavailable(
    adyen: AdyenContractServer, reply: Reply
) -> None:
    adyen.reply_with(reply)
    with pytest.raises(ProviderUnavailable) as unavailable:
        provider(adyen).cancel("993617894903480A", "t:e:cancel")
    assert unavailable.value.context["provider"] == "adyen"
    assert adyen.violations == []


def test_payment_status_is_not_polled(adyen: AdyenContractServer) -> None:
    adyen_provider = provider(adyen)
    assert adyen_provider.polls_status is False
    with pytest.raises(StatusNotPollable):
        adyen_provider.check_status(idempotency_key="t:e")
    assert adyen.requests == []
