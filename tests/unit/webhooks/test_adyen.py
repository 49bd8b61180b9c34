from __future__ import annotations

import json
from typing import Any

import pytest

from billing.domain.errors import SignatureInvalid, WebhookPayloadInvalid
from billing.webhooks import adyen
from billing.webhooks.events import WebhookOutcome
from billing.webhooks.verification import RawWebhook, SignatureFailure
from tests.unit.webhooks.factories import adyen_item, adyen_notification, api_gateway_event, raw

KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0"
OLD_KEY = "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F90"

# Published vector: Adyen/adyen-python-api-library, test/UtilTest.py::test_notification_request_item_hmac (the same
# key, item and signature appear in adyen-ruby-api-library spec/utils/hmac_validator_spec.rb).
LIBRARY_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
LIBRARY_ITEM: dict[str, Any] = {
    "pspReference": "7914073381342284",
    "merchantReference": "TestPayment-1407325143704",
    "merchantAccountCode": "TestMerchant",
    "amount": {"currency": "EUR", "value": 1130},
    "eventCode": "AUTHORISATION",
    "success": "true",
    "eventDate": "2019-05-06T17:15:34.121+02:00",
    "operations": ["CANCEL", "CAPTURE", "REFUND"],
    "paymentMethod": "visa",
}
LIBRARY_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="

# Published vectors signed by Adyen's test platform: Adyen/adyen-python-api-library, test/mocks/util/
# {backslash,colon,forwardslash}_notification.json, checked by test/UtilTest.py::test_webhooks_with_slashes.
# Only the signed fields are reproduced; the unsigned additionalData and operations do not enter the HMAC.
SLASHES_KEY = "74F490DD33F7327BAECC88B2947C011FC02D014A473AAA33A8EC93E4DC069174"
SLASHES_ITEMS = [
    ("T7FD4VM4D3RZNN82", "\\\\slashes are fun", "nIgT81gaB5oJpn2jPXupDq68iRo2wUlBsuYjtYfwKqo="),
    ("M8NB66SBZSGLNK82", ":slashes are fun", "2EQYm7YJpKO4EtHSPu55SQTyWf8dkW5u2nD1tJFpViA="),
    ("X3GWNS6KJ8NKGK82", "//slashes are fun", "9Z0xdpG9Xi3zcmXv14t/BvMBut77O/Xq9D4CQXSDUi4="),
]

# Published vector for the raw-body (HmacSignature header) variant: Adyen/adyen-python-api-library,
# test/UtilTest.py::test_is_valid_hmac_payload; the body is that test's triple-quoted literal, whitespace included.
PAYLOAD_VECTOR_BODY = (
    b"\n"
    b"        {\n"
    b'            "type": "merchant.created",\n'
    b'            "environment": "test",\n'
    b'            "createdAt": "01-01-2024",\n'
    b'            "data": {\n'
    b'                "capabilities": {\n'
    b'                    "sendToTransferInstrument": {\n'
    b'                        "requested": true,\n'
    b'                        "requestedLevel": "notApplicable"\n'
    b"                    }\n"
    b"                },\n"
    b'                "companyId": "YOUR_COMPANY_ID",\n'
    b'                "merchantId": "YOUR_MERCHANT_ACCOUNT",\n'
    b'                "status": "PreActive"\n'
    b"            }\n"
    b"        }\n"
    b"        "
)
PAYLOAD_VECTOR_SIGNATURE = "fX74xUdztFmaXAn3IusMFFUBUSkLmDQUK0tm8xL6ZTU="


def _slashes_item(psp_reference: str, merchant_reference: str, signature: str) -> dict[str, Any]:
    return {
        "pspReference": psp_reference,
        "merchantAccountCode": "AntoniStroinski",
        "merchantReference": merchant_reference,
        "amount": {"currency": "EUR", "value": 1000},
        "eventCode": "AUTHORISATION",
        "success": "true",
        "reason": "076181:1111:03/2030",
        "additionalData": {"hmacSignature": signature},
    }


def _notification_with(*items: dict[str, Any]) -> bytes:
    return json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": i} for i in items]}).encode()


def _reason(excinfo: pytest.ExceptionInfo[SignatureInvalid]) -> str:
    return excinfo.value.reason


# --- published vectors --------------------------------------------------------------------------------------------


def test_signing_string_published_item_matches_adyen_libraries() -> None:
    assert adyen.signing_string(LIBRARY_ITEM) == (
        "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
    )


def test_sign_notification_item_published_vector_matches_adyen_python() -> None:
    assert adyen.sign_notification_item(LIBRARY_ITEM, LIBRARY_KEY) == LIBRARY_SIGNATURE


def test_verify_published_notification_accepts() -> None:
    item = {**LIBRARY_ITEM, "additionalData": {"hmacSignature": LIBRARY_SIGNATURE}}

    adyen.verifier().verify(raw("adyen", _notification_with(item)), [LIBRARY_KEY])


@pytest.mark.parametrize(("psp_reference", "merchant_reference", "signature"), SLASHES_ITEMS)
def test_verify_adyen_signed_references_with_colons_and_slashes_accepts_unescaped(
    psp_reference: str, merchant_reference: str, signature: str
) -> None:
    item = _slashes_item(psp_reference, merchant_reference, signature)

    adyen.verifier().verify(raw("adyen", _notification_with(item)), [SLASHES_KEY])


def test_verify_published_notification_batch_accepts_every_item() -> None:
    body = _notification_with(*(_slashes_item(*vector) for vector in SLASHES_ITEMS))

    adyen.verifier().verify(raw("adyen", body), [SLASHES_KEY])


def test_sign_payload_published_vector_matches_adyen_python() -> None:
    assert adyen.sign_payload(PAYLOAD_VECTOR_BODY, LIBRARY_KEY) == PAYLOAD_VECTOR_SIGNATURE


def test_verify_published_payload_with_hmac_header_accepts() -> None:
    delivery = raw("adyen", PAYLOAD_VECTOR_BODY, {"HmacSignature": PAYLOAD_VECTOR_SIGNATURE})

    adyen.verifier().verify(delivery, [LIBRARY_KEY])


def test_verify_published_payload_with_whitespace_trimmed_rejects_mismatch() -> None:
    delivery = raw("adyen", PAYLOAD_VECTOR_BODY.strip(), {"HmacSignature": PAYLOAD_VECTOR_SIGNATURE})

    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(delivery, [LIBRARY_KEY])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


# --- standard notifications: tampering, keys, rotation, batches -------------------------------------------------


def test_verify_signed_notification_accepts() -> None:
    adyen.verifier().verify(raw("adyen", adyen_notification([adyen_item()], KEY)), [KEY])


@pytest.mark.parametrize(
    ("field", "value"),
    [("pspReference", "PSP0000000000002"), ("success", "false"), ("eventCode", "CHARGEBACK"), ("amount", {})],
)
def test_verify_tampered_signed_field_rejects_mismatch(field: str, value: object) -> None:
    document = json.loads(adyen_notification([adyen_item()], KEY))
    document["notificationItems"][0]["NotificationRequestItem"][field] = value

    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", json.dumps(document).encode()), [KEY])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_wrong_key_rejects_mismatch() -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", adyen_notification([adyen_item()], OLD_KEY)), [KEY])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


@pytest.mark.parametrize("signing_key", [OLD_KEY, KEY])
def test_verify_during_rotation_overlap_accepts_old_and_new_key(signing_key: str) -> None:
    adyen.verifier().verify(raw("adyen", adyen_notification([adyen_item()], signing_key)), [KEY, OLD_KEY])


def test_verify_batch_with_one_bad_item_rejects_whole_delivery() -> None:
    good = [adyen_item(psp_reference=f"PSP000000000000{n}") for n in range(3)]
    document = json.loads(adyen_notification(good, KEY))
    document["notificationItems"][1]["NotificationRequestItem"]["amount"]["value"] = 1
    body = json.dumps(document).encode()

    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", body), [KEY])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_batch_with_one_unsigned_item_rejects_missing_signature() -> None:
    signed = json.loads(adyen_notification([adyen_item()], KEY))["notificationItems"]
    unsigned = json.loads(adyen_notification([adyen_item(psp_reference="PSP9")]))["notificationItems"]
    body = json.dumps({"live": "false", "notificationItems": signed + unsigned}).encode()

    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", body), [KEY])
    assert _reason(excinfo) == SignatureFailure.MISSING_SIGNATURE


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"live": "false"}',
        b'{"live": "false", "notificationItems": []}',
        b'{"live": "false", "notificationItems": [{"Other": {}}]}',
        b'{"live": "false", "notificationItems": ["x"]}',
    ],
)
def test_verify_unreadable_notification_without_header_rejects_malformed_payload(body: bytes) -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", body), [KEY])
    assert _reason(excinfo) == SignatureFailure.MALFORMED_PAYLOAD


# --- raw-body (header) variant ------------------------------------------------------------------------------------


def test_verify_header_variant_signed_body_accepts() -> None:
    body = b'{"type": "balancePlatform.transfer.updated", "data": {"id": "T1"}}'

    adyen.verifier().verify(raw("adyen", body, {"hmacsignature": adyen.sign_payload(body, KEY)}), [KEY])


def test_verify_header_variant_tampered_body_rejects_mismatch() -> None:
    body = b'{"type": "balancePlatform.transfer.updated", "data": {"id": "T1"}}'
    header = adyen.sign_payload(body, KEY)

    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", body.replace(b"T1", b"T2"), {"HmacSignature": header}), [KEY])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_header_variant_takes_precedence_over_item_signatures() -> None:
    # Validly signed items do not rescue a delivery whose header signature is wrong.
    body = adyen_notification([adyen_item()], KEY)

    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", body, {"HmacSignature": adyen.sign_payload(body, OLD_KEY)}), [KEY])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_empty_header_rejects_malformed_header() -> None:
    body = adyen_notification([adyen_item()], KEY)

    with pytest.raises(SignatureInvalid) as excinfo:
        adyen.verifier().verify(raw("adyen", body, {"HmacSignature": " "}), [KEY])
    assert _reason(excinfo) == SignatureFailure.MALFORMED_HEADER


def test_verify_base64_encoded_api_gateway_body_accepts() -> None:
    body = adyen_notification([adyen_item(reason="Réfusé")], KEY)
    event = api_gateway_event("adyen", body, {}, base64_encoded=True)

    adyen.verifier().verify(RawWebhook.from_api_gateway_event(event), [KEY])


def test_verify_malformed_hex_key_raises_configuration_error() -> None:
    with pytest.raises(ValueError, match=r"non-hexadecimal"):
        adyen.verifier().verify(raw("adyen", adyen_notification([adyen_item()], KEY)), ["not-hex"])


# --- parsing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_code", "success", "outcome"),
    [
        ("AUTHORISATION", "true", WebhookOutcome.SUCCEEDED),
        ("AUTHORISATION", "false", WebhookOutcome.FAILED),
        ("CHARGEBACK", "true", WebhookOutcome.REVERSED),
        ("REFUND", "true", WebhookOutcome.REVERSED),
        ("REFUND", "false", WebhookOutcome.REVERSED),
        ("CHARGEBACK", "false", WebhookOutcome.IGNORED),
        ("CAPTURE", "true", WebhookOutcome.IGNORED),
        ("REPORT_AVAILABLE", "true", WebhookOutcome.IGNORED),
    ],
)
def test_parse_event_code_and_success_map_to_outcome(event_code: str, success: str, outcome: WebhookOutcome) -> None:
    payment = None if event_code == "AUTHORISATION" else "PSP0000000000000"
    item = adyen_item(event_code=event_code, success=success, original_reference=payment)

    [event] = adyen.parse(adyen_notification([item]))

    assert event.outcome is outcome
    assert event.event_type == event_code


def test_parse_authorisation_derives_event_id_and_uses_psp_reference() -> None:
    [event] = adyen.parse(adyen_notification([adyen_item(psp_reference="PSP1", success="false", reason="Refused")]))

    assert (event.provider, event.event_id, event.provider_reference) == ("adyen", "PSP1:AUTHORISATION:false", "PSP1")
    assert event.failure_code == "Refused"
    assert event.occurred_at is not None
    assert event.occurred_at.isoformat() == "2026-03-01T13:00:00+01:00"


def test_parse_modification_uses_original_reference() -> None:
    item = adyen_item(psp_reference="CB1", event_code="CHARGEBACK", original_reference="PSP1", reason="Fraud")

    [event] = adyen.parse(adyen_notification([item]))

    assert (event.event_id, event.provider_reference, event.failure_code) == ("CB1:CHARGEBACK:true", "PSP1", "Fraud")


def test_parse_successful_authorisation_has_no_failure_code() -> None:
    [event] = adyen.parse(adyen_notification([adyen_item(reason="039404:1111:03/2030")]))

    assert event.failure_code is None


def test_parse_batch_returns_one_event_per_item_in_order() -> None:
    items = [adyen_item(psp_reference=f"PSP{n}") for n in range(3)]

    events = adyen.parse(adyen_notification(items, KEY))

    assert [e.provider_reference for e in events] == ["PSP0", "PSP1", "PSP2"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"notificationItems": []}',
        b'{"notificationItems": [{"NotificationRequestItem": {"eventCode": "AUTHORISATION", "success": "true"}}]}',
        b'{"notificationItems": [{"NotificationRequestItem": {"pspReference": "P", "success": "true"}}]}',
        b'{"notificationItems": [{"NotificationRequestItem": {"pspReference": "P", "eventCode": "X"}}]}',
        # JSON true, not the string "true" Adyen sends and signs.
        b'{"notificationItems": [{"NotificationRequestItem": {"pspReference": "P", "eventCode": "X", '
        b'"success": true}}]}',
        b'{"type": "balancePlatform.transfer.updated", "data": {}}',
    ],
)
def test_parse_malformed_notification_raises_payload_invalid(body: bytes) -> None:
    with pytest.raises(WebhookPayloadInvalid):
        adyen.parse(body)


# --- amounts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("success", ["true", "false"])
def test_parse_authorisation_reads_signed_amount_value_and_currency(success: str) -> None:
    [event] = adyen.parse(adyen_notification([adyen_item(success=success, value=1130, currency="KWD")], KEY))

    assert (event.amount, event.currency) == (1130, "KWD")


@pytest.mark.parametrize("event_code", ["REFUND", "CHARGEBACK", "CAPTURE"])
def test_parse_modification_carries_no_payment_amount(event_code: str) -> None:
    # A refund's or chargeback's amount is the modification's (possibly partial), not the payment's.
    [event] = adyen.parse(adyen_notification([adyen_item(event_code=event_code, original_reference="PSP1")]))

    assert (event.amount, event.currency) == (None, None)


def test_parse_authorisation_without_amount_carries_none() -> None:
    item = adyen_item()
    del item["amount"]

    [event] = adyen.parse(adyen_notification([item]))

    assert (event.amount, event.currency) == (None, None)


@pytest.mark.parametrize(
    "amount",
    [
        {"value": 11.30, "currency": "EUR"},
        {"value": "1130", "currency": "EUR"},
        {"value": -5, "currency": "EUR"},
        {"value": 1130},
        {"currency": "EUR"},
        {"value": 1130, "currency": "eur"},
        {"value": 1130, "currency": "ZZZ"},
        "1130 EUR",
    ],
    ids=["float", "string", "negative", "no_currency", "no_value", "lower_case", "unknown_code", "not_an_object"],
)
def test_parse_malformed_amount_of_authorisation_raises_payload_invalid(amount: object) -> None:
    item = {**adyen_item(), "amount": amount}

    with pytest.raises(WebhookPayloadInvalid, match=r"notificationItems\[0\]\.NotificationRequestItem\.amount"):
        adyen.parse(adyen_notification([item]))
