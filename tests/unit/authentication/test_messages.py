"""Parsing EMV 3DS messages: each type's fields, Money from an AReq, the envelope, refusals and redaction."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from billing.authentication.messages import AReq, ARes, CReq, CRes, EmvError, RReq, RRes, parse_message
from billing.authentication.protocol import DeviceChannel, MessageCategory, MessageVersion
from billing.authentication.states import TransStatus
from billing.domain.errors import BillingError, EmvMessageInvalid
from billing.domain.money import Money
from billing.instruments.brands import CardBrand
from tests.unit.authentication import factories as f
from tests.unit.authentication.factories import ACS_TRANS_ID, AUTHENTICATION_VALUE, DS_TRANS_ID, PAN, SERVER_TRANS_ID


def refusal(raw: bytes | str | dict[str, Any]) -> EmvMessageInvalid:
    with pytest.raises(EmvMessageInvalid) as refused:
        parse_message(raw)
    return refused.value


# --- What each message type parses into -------------------------------------------------------------------------------


def test_an_areq_keeps_the_purchase_as_money_and_only_the_last4_of_the_card() -> None:
    message = parse_message(f.areq())

    assert message == AReq(
        message_version=MessageVersion.V2_2_0,
        three_ds_server_trans_id=SERVER_TRANS_ID,
        ds_trans_id=None,
        message_category=MessageCategory.PAYMENT,
        device_channel=DeviceChannel.BROWSER,
        challenge_indicator="01",
        purchase=Money(1250, "EUR"),
        account_last4="0050",
        account_brand=CardBrand.MASTERCARD,
    )


@pytest.mark.parametrize(
    ("amount", "currency", "exponent", "money"),
    [
        ("1", "840", "2", Money(1, "USD")),
        ("0", "978", "2", Money(0, "EUR")),
        ("000125", "978", "2", Money(125, "EUR")),
        ("5000", "392", "0", Money(5000, "JPY")),
        ("1234", "414", "3", Money(1234, "KWD")),
        ("999999999999999", "840", "2", Money(999_999_999_999_999, "USD")),
    ],
)
def test_an_areq_amount_is_integer_minor_units_of_the_alphabetic_currency(
    amount: str, currency: str, exponent: str, money: Money
) -> None:
    message = parse_message(f.areq(purchaseAmount=amount, purchaseCurrency=currency, purchaseExponent=exponent))

    assert isinstance(message, AReq)
    assert message.purchase == money
    assert type(message.purchase.amount) is int


def test_a_non_payment_areq_may_name_no_purchase() -> None:
    message = parse_message(
        f.areq(messageCategory="02", purchaseAmount=None, purchaseCurrency=None, purchaseExponent=None)
    )

    assert isinstance(message, AReq)
    assert message.message_category is MessageCategory.NON_PAYMENT
    assert message.purchase is None


def test_an_ares_keeps_the_fields_the_flow_needs() -> None:
    message = parse_message(f.ares(transStatusReason="13"))

    assert isinstance(message, ARes)
    assert (message.three_ds_server_trans_id, message.acs_trans_id, message.ds_trans_id) == (
        SERVER_TRANS_ID,
        ACS_TRANS_ID,
        DS_TRANS_ID,
    )
    assert message.trans_status is TransStatus.AUTHENTICATED
    assert message.trans_status_reason == "13"
    assert message.eci == "05"
    assert message.authentication_value == AUTHENTICATION_VALUE
    assert message.has_authentication_value
    assert message.acs_url is None


def test_a_challenge_ares_keeps_where_the_challenge_happens() -> None:
    message = parse_message(f.challenge_ares())

    assert isinstance(message, ARes)
    assert message.trans_status is TransStatus.CHALLENGE_REQUIRED
    assert message.acs_url == "https://acs.example.com/challenge"
    assert message.acs_challenge_mandated is True
    assert not message.has_authentication_value


def test_an_app_challenge_enters_through_the_signed_content_instead_of_a_url() -> None:
    message = parse_message(f.challenge_ares(acsURL=None, acsSignedContent="eyJhbGciOiJQUzI1NiJ9.e30.c2ln"))

    assert isinstance(message, ARes)
    assert message.acs_url is None
    assert message.acs_signed_content == "eyJhbGciOiJQUzI1NiJ9.e30.c2ln"


def test_a_decoupled_challenge_needs_no_url() -> None:
    message = parse_message(f.challenge_ares(transStatus="D", acsURL=None))

    assert isinstance(message, ARes)
    assert message.trans_status is TransStatus.DECOUPLED_CHALLENGE


def test_an_rreq_reports_the_challenge_outcome() -> None:
    message = parse_message(f.rreq(transStatus="N", eci="07", authenticationValue=None, challengeCancel="01"))

    assert message == RReq(
        message_version=MessageVersion.V2_2_0,
        three_ds_server_trans_id=SERVER_TRANS_ID,
        acs_trans_id=ACS_TRANS_ID,
        ds_trans_id=DS_TRANS_ID,
        message_category=MessageCategory.PAYMENT,
        trans_status=TransStatus.NOT_AUTHENTICATED,
        trans_status_reason=None,
        eci="07",
        authentication_value=None,
        challenge_cancel="01",
    )


def test_the_other_messages_parse_into_their_types() -> None:
    assert parse_message(f.rres()) == RRes(
        message_version=MessageVersion.V2_2_0,
        three_ds_server_trans_id=SERVER_TRANS_ID,
        acs_trans_id=ACS_TRANS_ID,
        ds_trans_id=DS_TRANS_ID,
        results_status="01",
    )
    assert parse_message(f.creq()) == CReq(
        message_version=MessageVersion.V2_2_0,
        three_ds_server_trans_id=SERVER_TRANS_ID,
        acs_trans_id=ACS_TRANS_ID,
        challenge_window_size="05",
        challenge_cancel=None,
    )
    assert parse_message(f.cres()) == CRes(
        message_version=MessageVersion.V2_2_0,
        three_ds_server_trans_id=SERVER_TRANS_ID,
        acs_trans_id=ACS_TRANS_ID,
        trans_status=TransStatus.AUTHENTICATED,
    )


def test_an_erro_message_parses_into_an_emv_error_not_an_exception() -> None:
    message = parse_message(f.erro())

    assert message == EmvError(
        message_version=MessageVersion.V2_2_0,
        error_code="203",
        error_description="Format of one or more data elements is invalid",
        error_component="D",
        error_detail="purchaseAmount",
        error_message_type="AReq",
        three_ds_server_trans_id=SERVER_TRANS_ID,
        acs_trans_id=None,
        ds_trans_id=None,
    )
    assert not isinstance(message, BaseException)


@pytest.mark.parametrize("version", ["2.1.0", "2.2.0", "2.3.1"])
def test_the_three_supported_versions_parse(version: str) -> None:
    message = parse_message(f.ares(messageVersion=version))

    assert isinstance(message, ARes)
    assert message.message_version == version


# --- Input forms and the base64url envelope ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["bytes", "str", "mapping"])
def test_bytes_text_and_decoded_objects_parse_alike(form: str) -> None:
    message = f.ares()
    forms: dict[str, bytes | str | dict[str, Any]] = {
        "bytes": json.dumps(message).encode(),
        "str": json.dumps(message),
        "mapping": message,
    }

    assert parse_message(forms[form]) == parse_message(f.ares())


@pytest.mark.parametrize("padded", [True, False])
def test_a_wrapped_body_decodes_with_or_without_padding(padded: bool) -> None:
    message = f.ares(eci="06")
    body = f.wrapped(message, padded=padded)
    if not padded:
        assert not body["body"].endswith("=")

    assert parse_message(json.dumps(body)) == parse_message(message)


def test_a_wrapped_body_uses_the_url_safe_alphabet_only() -> None:
    # "???>>>" encodes to characters outside the common alphabet: "-" and "_" in base64url, "+" and "/" in base64.
    message = f.ares(acsOperatorID="???>>>")
    url_safe = base64.urlsafe_b64encode(json.dumps(message).encode()).decode()
    standard = base64.b64encode(json.dumps(message).encode()).decode()
    assert set("-_") & set(url_safe)
    assert set("+/") & set(standard)

    assert parse_message({"body": url_safe}) == parse_message(message)
    assert refusal({"body": standard}).reason == "malformed_base64"


def test_a_body_beside_other_members_is_not_an_envelope() -> None:
    assert refusal({"body": "e30", "messageVersion": "2.2.0"}).reason == "missing_field:messageType"


# --- Refusals ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "malformed_json"),
        ("{", "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),
        ("[]", "malformed_json"),
        ('"ARes"', "malformed_json"),
        ('{"messageType": "ARes", "messageType": "AReq"}', "malformed_json"),
        ('{"messageType": "ARes", "eci": NaN}', "malformed_json"),
        ("[" * 100_000 + "]" * 100_000, "malformed_json"),
        ({"body": "!!!not base64!!!"}, "malformed_base64"),
        ({"body": "abcde"}, "malformed_base64"),
        ({"body": 5}, "malformed_base64"),
        ({"body": base64.urlsafe_b64encode(b"not json").decode()}, "malformed_json"),
        ({"body": base64.urlsafe_b64encode(b"[1]").decode()}, "malformed_json"),
    ],
)
def test_what_is_not_a_json_object_is_refused(raw: bytes | str | dict[str, Any], reason: str) -> None:
    assert refusal(raw).reason == reason


@pytest.mark.parametrize("message_type", ["PReq", "PRes", "pArq", "AREQ", "ares", "", 5])
def test_an_unknown_message_type_is_refused(message_type: object) -> None:
    assert refusal(f.ares(messageType=message_type)).reason == "unknown_message_type"


def test_a_message_without_a_type_is_refused() -> None:
    assert refusal(f.ares(messageType=None)).reason == "missing_field:messageType"


@pytest.mark.parametrize("version", ["2.0.0", "1.0.2", "2.2", "2.3.0", "3.0.0", "", 2.2])
def test_an_unsupported_version_is_refused(version: object) -> None:
    refused = refusal(f.ares(messageVersion=version))

    assert refused.reason == "unsupported_version"
    assert "2.1.0, 2.2.0, 2.3.1" in str(refused)


def test_a_message_without_a_version_is_refused() -> None:
    assert refusal(f.rreq(messageVersion=None)).reason == "missing_field:messageVersion"


@pytest.mark.parametrize(
    ("factory", "member"),
    [
        (f.areq, "threeDSServerTransID"),
        (f.areq, "acctNumber"),
        (f.areq, "messageCategory"),
        (f.areq, "deviceChannel"),
        (f.ares, "threeDSServerTransID"),
        (f.ares, "acsTransID"),
        (f.ares, "dsTransID"),
        (f.ares, "transStatus"),
        (f.rreq, "threeDSServerTransID"),
        (f.rreq, "transStatus"),
        (f.rreq, "messageCategory"),
        (f.rres, "resultsStatus"),
        (f.creq, "acsTransID"),
        (f.cres, "threeDSServerTransID"),
        (f.erro, "errorCode"),
        (f.erro, "errorDescription"),
    ],
)
def test_a_missing_required_member_is_named(factory: Any, member: str) -> None:
    assert refusal(factory(**{member: None})).reason == f"missing_field:{member}"


@pytest.mark.parametrize("member", ["purchaseAmount", "purchaseCurrency", "purchaseExponent"])
def test_a_payment_areq_must_name_all_of_its_purchase(member: str) -> None:
    assert refusal(f.areq(**{member: None})).reason == f"missing_field:{member}"
    assert refusal(f.areq(messageCategory="02", **{member: None})).reason == f"missing_field:{member}"


def test_a_payment_areq_without_any_purchase_is_refused() -> None:
    refused = refusal(f.areq(purchaseAmount=None, purchaseCurrency=None, purchaseExponent=None))

    assert refused.reason == "missing_field:purchaseAmount"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"threeDSServerTransID": "not-a-uuid"}, "invalid_field:threeDSServerTransID"),
        ({"purchaseAmount": "12.50"}, "invalid_field:purchaseAmount"),
        ({"purchaseAmount": "-1"}, "invalid_field:purchaseAmount"),
        ({"purchaseAmount": " 1"}, "invalid_field:purchaseAmount"),
        ({"purchaseAmount": "١٢"}, "invalid_field:purchaseAmount"),
        ({"purchaseAmount": 1250}, "invalid_field:purchaseAmount"),
        ({"purchaseAmount": 12.5}, "invalid_field:purchaseAmount"),
        ({"purchaseAmount": "1" + "0" * 15 + "1"}, "invalid_field:purchaseAmount"),
        ({"purchaseCurrency": "EUR"}, "invalid_field:purchaseCurrency"),
        ({"purchaseCurrency": "999"}, "invalid_field:purchaseCurrency"),
        ({"purchaseCurrency": "975"}, "invalid_field:purchaseCurrency"),
        ({"purchaseExponent": "3"}, "invalid_field:purchaseExponent"),
        ({"purchaseCurrency": "392", "purchaseExponent": "2"}, "invalid_field:purchaseExponent"),
        ({"purchaseExponent": "22"}, "invalid_field:purchaseExponent"),
        ({"acctNumber": "5204 2404 3872 0050"}, "invalid_field:acctNumber"),
        ({"acctNumber": "520424043872"}, "invalid_field:acctNumber"),
        ({"messageCategory": "80"}, "invalid_field:messageCategory"),
        ({"deviceChannel": "04"}, "invalid_field:deviceChannel"),
        ({"threeDSRequestorChallengeInd": "1"}, "invalid_field:threeDSRequestorChallengeInd"),
    ],
)
def test_an_areq_member_of_the_wrong_shape_is_refused(overrides: dict[str, Any], reason: str) -> None:
    assert refusal(f.areq(**overrides)).reason == reason


@pytest.mark.parametrize("eci", ["5", "005", "AB", "N3", "n2", " 5", 5, ""])
def test_an_eci_that_is_not_two_digits_is_refused(eci: object) -> None:
    assert refusal(f.ares(eci=eci)).reason == "invalid_field:eci"
    assert refusal(f.rreq(eci=eci)).reason == "invalid_field:eci"


@pytest.mark.parametrize("eci", ["05", "00", "07", "N0", "N2"])
def test_two_digit_and_mastercard_non_payment_ecis_parse(eci: str) -> None:
    message = parse_message(f.ares(eci=eci))

    assert isinstance(message, ARes)
    assert message.eci == eci


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"transStatus": "X"}, "invalid_field:transStatus"),
        ({"transStatus": "y"}, "invalid_field:transStatus"),
        ({"transStatus": "D", "messageVersion": "2.1.0"}, "invalid_field:transStatus"),
        ({"transStatus": "I", "messageVersion": "2.1.0"}, "invalid_field:transStatus"),
        ({"transStatusReason": "1"}, "invalid_field:transStatusReason"),
        ({"authenticationValue": "not base64!"}, "invalid_field:authenticationValue"),
        ({"authenticationValue": ""}, "invalid_field:authenticationValue"),
        ({"authenticationValue": "A" * 400}, "invalid_field:authenticationValue"),
        ({"acsChallengeMandated": "yes"}, "invalid_field:acsChallengeMandated"),
        ({"dsTransID": "x"}, "invalid_field:dsTransID"),
        ({"eci": None, "acsURL": None, "transStatus": "C", "authenticationValue": None}, "missing_field:acsURL"),
        ({"transStatus": "C", "acsURL": "http://acs.example.com/challenge"}, "invalid_field:acsURL"),
        ({"transStatus": "C", "acsURL": "javascript:alert(1)"}, "invalid_field:acsURL"),
        ({"transStatus": "C", "acsURL": "https:///no-host"}, "invalid_field:acsURL"),
        ({"transStatus": "C", "acsURL": "https://[::1"}, "invalid_field:acsURL"),
        ({"transStatus": "C", "acsURL": None, "acsSignedContent": "not a JWS"}, "invalid_field:acsSignedContent"),
        ({"acsSignedContent": "a.b.c" + "d" * 70_000}, "invalid_field:acsSignedContent"),
        ({"eci": None}, None),
    ],
)
def test_an_ares_member_of_the_wrong_shape_is_refused(overrides: dict[str, Any], reason: str | None) -> None:
    if reason is None:
        assert isinstance(parse_message(f.ares(**overrides)), ARes)
    else:
        assert refusal(f.ares(**overrides)).reason == reason


def test_a_null_member_is_malformed_not_absent() -> None:
    raw = json.dumps({**f.ares(), "eci": None})

    assert refusal(raw).reason == "invalid_field:eci"


@pytest.mark.parametrize("status", ["C", "D", "I"])
def test_an_rreq_that_asks_for_a_challenge_or_is_informational_is_refused(status: str) -> None:
    refused = refusal(f.rreq(transStatus=status, eci=None, authenticationValue=None))

    assert refused.reason == "invalid_field:transStatus"


@pytest.mark.parametrize("status", ["Y", "A"])
def test_a_successful_payment_rreq_without_its_cryptogram_is_refused(status: str) -> None:
    assert refusal(f.rreq(transStatus=status, authenticationValue=None)).reason == "missing_field:authenticationValue"
    # A non-payment authentication has no authorisation to send a cryptogram to.
    assert isinstance(parse_message(f.rreq(transStatus=status, authenticationValue=None, messageCategory="02")), RReq)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"errorCode": "20"}, "invalid_field:errorCode"),
        ({"errorComponent": "X"}, "invalid_field:errorComponent"),
        ({"errorDescription": "x" * 3000}, "invalid_field:errorDescription"),
        ({"messageVersion": "9.9.9"}, "unsupported_version"),
    ],
)
def test_an_erro_of_the_wrong_shape_is_refused(overrides: dict[str, Any], reason: str) -> None:
    assert refusal(f.erro(**overrides)).reason == reason


def test_a_cres_may_only_say_whether_the_challenge_passed() -> None:
    assert refusal(f.cres(transStatus="A")).reason == "invalid_field:transStatus"
    message = parse_message(f.cres(transStatus=None))
    assert isinstance(message, CRes)
    assert message.trans_status is None


def test_the_refusal_is_a_billing_error_with_a_stable_code() -> None:
    refused = refusal(f.ares(eci="5"))

    assert isinstance(refused, BillingError)
    assert refused.code == "emv_message_invalid"
    assert refused.context == {"reason": "invalid_field:eci"}
    assert "eci" in str(refused)


# --- Card data never leaks --------------------------------------------------------------------------------------------


def test_the_pan_is_not_kept_in_a_parsed_areq() -> None:
    message = parse_message(f.areq())

    assert PAN not in repr(message)
    assert all(PAN not in str(getattr(message, name)) for name in AReq.__dataclass_fields__)
    assert PAN[:8] not in repr(message)


@pytest.mark.parametrize("factory", [f.ares, f.rreq])
def test_the_authentication_value_is_never_in_repr(factory: Any) -> None:
    message = parse_message(factory())

    assert isinstance(message, ARes | RReq)
    assert message.authentication_value == AUTHENTICATION_VALUE
    assert AUTHENTICATION_VALUE not in repr(message)
    assert AUTHENTICATION_VALUE not in str(message)


def _areq_refusals() -> list[dict[str, Any]]:
    return [
        f.areq(acctNumber=PAN + "0000"),
        f.areq(acctNumber=PAN[:-1] + "x"),
        f.areq(acctNumber=" " + PAN),
        f.areq(purchaseAmount="12.5"),
        f.areq(purchaseCurrency="000"),
        f.areq(threeDSServerTransID=PAN),
        f.areq(messageType=PAN),
        f.areq(messageVersion=PAN),
        f.areq(messageCategory=PAN),
    ]


def _cryptogram_refusals() -> list[dict[str, Any]]:
    return [
        f.ares(eci="5"),
        f.ares(transStatus="Q"),
        f.ares(threeDSServerTransID=None),
        f.ares(authenticationValue=AUTHENTICATION_VALUE + "!"),
        f.ares(acsTransID=AUTHENTICATION_VALUE),
        f.ares(messageVersion=AUTHENTICATION_VALUE),
        f.ares(messageType=AUTHENTICATION_VALUE),
        f.rreq(transStatus="C"),
        f.rreq(eci=AUTHENTICATION_VALUE),
        f.ares(transStatus="C", acsURL="http://" + AUTHENTICATION_VALUE),
    ]


@pytest.mark.parametrize("raw", _areq_refusals())
def test_no_refusal_of_an_areq_quotes_the_card_number(raw: dict[str, Any]) -> None:
    refused = refusal(raw)

    for text in (str(refused), repr(refused), refused.detail, repr(refused.context), repr(refused.args)):
        assert PAN[:12] not in text


@pytest.mark.parametrize("raw", _cryptogram_refusals())
def test_no_refusal_quotes_the_authentication_value(raw: dict[str, Any]) -> None:
    for form in (raw, json.dumps(raw), f.wrapped(raw)):
        refused = refusal(form)

        for text in (str(refused), repr(refused), refused.detail, repr(refused.context), repr(refused.args)):
            assert AUTHENTICATION_VALUE[:8] not in text


@pytest.mark.parametrize(
    "raw",
    [
        f'{{"acctNumber": "{PAN}", ',
        f'{{"acctNumber": "{PAN}", "acctNumber": "{PAN}"}}'.encode(),
        f'{{"acctNumber": "{PAN}"}}'.encode("utf-16"),
        {"body": base64.urlsafe_b64encode(f'{{"acctNumber": "{PAN}", '.encode()).decode()},
        f.ares(transStatus=AUTHENTICATION_VALUE),
        f.rreq(messageCategory=AUTHENTICATION_VALUE),
        f.areq(deviceChannel=PAN),
        f.ares(transStatus="C", acsURL="https://[" + AUTHENTICATION_VALUE),
    ],
)
def test_a_refusal_chains_to_no_exception_that_holds_the_input(raw: bytes | str | dict[str, Any]) -> None:
    # json's and enum's errors keep the document or the value; a refusal raised while handling one would carry it.
    refused = refusal(raw)

    assert refused.__cause__ is None
    assert refused.__context__ is None
