from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from billing.domain.errors import SignatureInvalid, WebhookPayloadInvalid
from billing.webhooks import stripe
from billing.webhooks.events import WebhookOutcome
from billing.webhooks.verification import RawWebhook, SignatureFailure
from tests.unit.webhooks.factories import NOW_UNIX, api_gateway_event, at, raw, stripe_event

SECRET = "whsec_test_current"
OLD_SECRET = "whsec_test_previous"

# Published vector: stripe/stripe-dotnet, src/StripeTests/Services/Events/EventUtilityTest.cs (timestamp, secret,
# header) with the body src/StripeTests/Resources/event_test_signature.json (byte for byte, trailing newline kept).
# The header also carries the v0 test-mode signature, which must be ignored.
DOTNET_TIMESTAMP = 1533204620
DOTNET_SECRET = "webhook_secret"
DOTNET_HEADER = (
    "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,"
    "v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef"
)
DOTNET_BODY = (
    b'{\n  "id": "evt_123",\n  "object": "event",\n  "account": "acct_123",\n  "api_version": "2017-05-25",\n'
    b'  "created": 1533204620,\n  "data": {\n    "object": {\n      "id": "cus_123",\n      "object": "customer",\n'
    b'      "created": 123456789,\n      "email": "test@stripe.com",\n      "livemode": false,\n'
    b'      "metadata": {}\n    }\n  },\n  "livemode": false,\n  "pending_webhooks": 1,\n  "request": {\n'
    b'    "id": "req_123",\n    "idempotency_key": "idempotency-key-123"\n  },\n  "type": "customer.created"\n}\n'
)


def _delivery(body: bytes, header: str | None, *, received_offset: float = 0) -> RawWebhook:
    headers = {} if header is None else {"Stripe-Signature": header}
    return raw("stripe", body, headers, received_at=at(received_offset))


def _reason(excinfo: pytest.ExceptionInfo[SignatureInvalid]) -> str:
    return excinfo.value.reason


# --- published vector -------------------------------------------------------------------------------------------


def test_compute_signature_published_vector_matches_stripe_dotnet() -> None:
    assert stripe.compute_signature(DOTNET_BODY, DOTNET_SECRET, DOTNET_TIMESTAMP) == (
        "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7"
    )


def test_verify_published_vector_within_tolerance_accepts() -> None:
    received = datetime.fromtimestamp(DOTNET_TIMESTAMP + 100, UTC)
    delivery = raw("stripe", DOTNET_BODY, {"Stripe-Signature": DOTNET_HEADER}, received_at=received)

    stripe.verifier().verify(delivery, [DOTNET_SECRET])


def test_verify_published_vector_with_one_byte_changed_rejects_mismatch() -> None:
    received = datetime.fromtimestamp(DOTNET_TIMESTAMP + 100, UTC)
    tampered = DOTNET_BODY.replace(b"acct_123", b"acct_124")
    delivery = raw("stripe", tampered, {"Stripe-Signature": DOTNET_HEADER}, received_at=received)

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(delivery, [DOTNET_SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


# --- signature ----------------------------------------------------------------------------------------------------


def test_verify_signed_delivery_accepts() -> None:
    body = stripe_event("payment_intent.succeeded")

    stripe.verifier().verify(_delivery(body, stripe.sign(body, SECRET, NOW_UNIX)), [SECRET])


def test_verify_tampered_body_rejects_mismatch() -> None:
    body = stripe_event("payment_intent.succeeded")
    header = stripe.sign(body, SECRET, NOW_UNIX)
    tampered = body.replace(b"pi_1", b"pi_2")

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(tampered, header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH
    assert excinfo.value.code == "signature_invalid"


def test_verify_reserialised_json_rejects_mismatch() -> None:
    body = stripe_event("payment_intent.succeeded")
    header = stripe.sign(body, SECRET, NOW_UNIX)
    # Same JSON value, different bytes: proves verification is over the raw body, not over parsed-and-dumped JSON.
    reserialised = json.dumps(json.loads(body), indent=2).encode()

    with pytest.raises(SignatureInvalid):
        stripe.verifier().verify(_delivery(reserialised, header), [SECRET])


def test_verify_wrong_secret_rejects_mismatch() -> None:
    body = stripe_event("payment_intent.succeeded")
    header = stripe.sign(body, "whsec_attacker", NOW_UNIX)

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(body, header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


@pytest.mark.parametrize("signing_secret", [OLD_SECRET, SECRET])
def test_verify_during_rotation_overlap_accepts_old_and_new_secret(signing_secret: str) -> None:
    body = stripe_event("payment_intent.succeeded")

    stripe.verifier().verify(_delivery(body, stripe.sign(body, signing_secret, NOW_UNIX)), [SECRET, OLD_SECRET])


def test_verify_after_rotation_completes_rejects_retired_secret() -> None:
    body = stripe_event("payment_intent.succeeded")

    with pytest.raises(SignatureInvalid):
        stripe.verifier().verify(_delivery(body, stripe.sign(body, OLD_SECRET, NOW_UNIX)), [SECRET])


def test_verify_header_listing_several_v1_accepts_when_any_matches() -> None:
    body = stripe_event("payment_intent.succeeded")
    good = stripe.compute_signature(body, SECRET, NOW_UNIX)
    header = f"t={NOW_UNIX},v1={'0' * 64},v1={good}"

    stripe.verifier().verify(_delivery(body, header), [SECRET])


def test_verify_only_v0_signature_rejects_malformed_header() -> None:
    body = stripe_event("payment_intent.succeeded")
    header = f"t={NOW_UNIX},v0={stripe.compute_signature(body, SECRET, NOW_UNIX)}"

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(body, header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MALFORMED_HEADER


def test_verify_signature_with_non_ascii_characters_rejects_without_crashing() -> None:
    body = stripe_event("payment_intent.succeeded")

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(body, f"t={NOW_UNIX},v1=é{'0' * 63}"), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


# --- header presence and shape ------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
def test_verify_missing_header_rejects_missing_header(header: str | None) -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(stripe_event("charge.succeeded"), header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISSING_HEADER


@pytest.mark.parametrize(
    "header",
    [
        "i'm not even a real signature header",
        "v1=" + "a" * 64,
        f"t={NOW_UNIX}",
        f"t=+{NOW_UNIX},v1={'a' * 64}",
        f"t={NOW_UNIX}.5,v1={'a' * 64}",
        f"t=1_533_204_620,v1={'a' * 64}",
        f"t={NOW_UNIX},t={NOW_UNIX},v1={'a' * 64}",
        f"t={NOW_UNIX},v1=",
    ],
)
def test_verify_malformed_header_rejects_malformed_header(header: str) -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(stripe_event("charge.succeeded"), header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MALFORMED_HEADER


def test_verify_header_name_in_other_case_accepts() -> None:
    body = stripe_event("payment_intent.succeeded")
    delivery = raw("stripe", body, {"stripe-signature": stripe.sign(body, SECRET, NOW_UNIX)})

    stripe.verifier().verify(delivery, [SECRET])


# --- timestamp tolerance ------------------------------------------------------------------------------------------


def test_verify_timestamp_older_than_tolerance_rejects_out_of_tolerance() -> None:
    body = stripe_event("payment_intent.succeeded")
    header = stripe.sign(body, SECRET, NOW_UNIX)

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(body, header, received_offset=301), [SECRET])
    assert _reason(excinfo) == SignatureFailure.TIMESTAMP_OUT_OF_TOLERANCE


def test_verify_timestamp_further_in_future_than_tolerance_rejects_out_of_tolerance() -> None:
    body = stripe_event("payment_intent.succeeded")
    header = stripe.sign(body, SECRET, NOW_UNIX + 301)

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(body, header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.TIMESTAMP_OUT_OF_TOLERANCE


@pytest.mark.parametrize("offset", [-300, 300])
def test_verify_timestamp_exactly_at_tolerance_accepts(offset: int) -> None:
    body = stripe_event("payment_intent.succeeded")
    header = stripe.sign(body, SECRET, NOW_UNIX)

    stripe.verifier().verify(_delivery(body, header, received_offset=offset), [SECRET])


def test_verify_configured_tolerance_rejects_what_default_accepts() -> None:
    body = stripe_event("payment_intent.succeeded")
    delivery = _delivery(body, stripe.sign(body, SECRET, NOW_UNIX), received_offset=15)

    stripe.verifier().verify(delivery, [SECRET])
    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier(timedelta(seconds=10)).verify(delivery, [SECRET])
    assert _reason(excinfo) == SignatureFailure.TIMESTAMP_OUT_OF_TOLERANCE


def test_verify_stale_forged_delivery_reports_mismatch_not_staleness() -> None:
    body = stripe_event("payment_intent.succeeded")
    header = stripe.sign(body, "whsec_attacker", NOW_UNIX - 10_000)

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(body, header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_absurd_timestamp_rejects_out_of_tolerance_without_overflow() -> None:
    body = stripe_event("payment_intent.succeeded")

    with pytest.raises(SignatureInvalid) as excinfo:
        stripe.verifier().verify(_delivery(body, stripe.sign(body, SECRET, 999_999_999_999)), [SECRET])
    assert _reason(excinfo) == SignatureFailure.TIMESTAMP_OUT_OF_TOLERANCE


def test_verify_empty_secret_list_fails_closed_with_configuration_error() -> None:
    body = stripe_event("payment_intent.succeeded")

    with pytest.raises(ValueError, match="no webhook secrets"):
        stripe.verifier().verify(_delivery(body, stripe.sign(body, SECRET, NOW_UNIX)), [])


# --- base64 bodies ------------------------------------------------------------------------------------------------


def test_verify_base64_encoded_api_gateway_body_accepts_decoded_bytes() -> None:
    # Non-ASCII and a trailing newline: bytes that would not survive a text round trip unchanged by accident.
    body = stripe_event("payment_intent.succeeded", {"id": "pi_1", "description": "café"}) + b"\n"
    event = api_gateway_event(
        "stripe", body, {"Stripe-Signature": stripe.sign(body, SECRET, NOW_UNIX)}, base64_encoded=True
    )
    delivery = RawWebhook.from_api_gateway_event(event, clock=lambda: at(0))

    assert delivery.body == body
    stripe.verifier().verify(delivery, [SECRET])


def test_verify_base64_body_signed_over_encoded_text_rejects_mismatch() -> None:
    body = stripe_event("payment_intent.succeeded")
    event = api_gateway_event("stripe", body, {}, base64_encoded=True)
    # A sender that signed the base64 text, not the bytes it encodes, is not following the scheme.
    event["headers"] = {"Stripe-Signature": stripe.sign(event["body"].encode(), SECRET, NOW_UNIX)}

    with pytest.raises(SignatureInvalid):
        stripe.verifier().verify(RawWebhook.from_api_gateway_event(event, clock=lambda: at(0)), [SECRET])


# --- parsing ------------------------------------------------------------------------------------------------------


_CHARGE = {"id": "ch_9", "object": "charge", "payment_intent": None, "amount": 500, "currency": "eur"}
_DISPUTE = {"id": "dp_9", "object": "dispute", "charge": "ch_9", "amount": 500, "currency": "eur"}


@pytest.mark.parametrize(
    ("event_type", "obj", "outcome"),
    [
        ("payment_intent.succeeded", {"id": "pi_9"}, WebhookOutcome.SUCCEEDED),
        ("payment_intent.payment_failed", {"id": "pi_9"}, WebhookOutcome.FAILED),
        ("charge.succeeded", _CHARGE, WebhookOutcome.SUCCEEDED),
        ("charge.failed", _CHARGE, WebhookOutcome.FAILED),
        ("charge.refunded", {**_CHARGE, "amount_refunded": 500}, WebhookOutcome.REVERSED),
        ("charge.dispute.created", _DISPUTE, WebhookOutcome.REVERSED),
        ("customer.created", {"id": "cus_9"}, WebhookOutcome.IGNORED),
        ("payment_intent.created", {"id": "pi_9"}, WebhookOutcome.IGNORED),
    ],
)
def test_parse_event_type_maps_to_outcome(event_type: str, obj: dict[str, object], outcome: WebhookOutcome) -> None:
    [event] = stripe.parse(stripe_event(event_type, obj))

    assert event.outcome is outcome
    assert event.event_type == event_type


def test_parse_payment_intent_event_reads_id_reference_and_time() -> None:
    [event] = stripe.parse(stripe_event("payment_intent.succeeded", {"id": "pi_42"}, event_id="evt_42"))

    assert (event.provider, event.event_id, event.provider_reference) == ("stripe", "evt_42", "pi_42")
    assert event.occurred_at == at(0)
    assert event.failure_code is None


def test_parse_payment_failed_keeps_the_issuers_decline_code_else_the_error_code() -> None:
    obj = {"id": "pi_7", "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"}}
    [event] = stripe.parse(stripe_event("payment_intent.payment_failed", obj))
    assert event.failure_code == "insufficient_funds"

    obj = {"id": "pi_8", "last_payment_error": {"code": "payment_intent_authentication_failure"}}
    [event] = stripe.parse(stripe_event("payment_intent.payment_failed", obj))
    assert event.failure_code == "payment_intent_authentication_failure"


def test_parse_payment_intent_canceled_is_a_failure_that_can_never_succeed() -> None:
    obj = {"id": "pi_9", "cancellation_reason": "abandoned", "amount": 1999, "currency": "eur"}
    [event] = stripe.parse(stripe_event("payment_intent.canceled", obj))
    assert (event.outcome, event.failure_code, event.provider_reference) == (WebhookOutcome.FAILED, "canceled", "pi_9")


def test_parse_charge_event_uses_payment_intent_as_reference() -> None:
    obj = {"id": "ch_1", "object": "charge", "payment_intent": "pi_5", "failure_code": "expired_card"}

    [event] = stripe.parse(stripe_event("charge.failed", obj))

    assert event.provider_reference == "pi_5"
    assert event.failure_code == "expired_card"


def test_parse_charge_without_payment_intent_uses_charge_id() -> None:
    obj = {"id": "ch_2", "object": "charge", "payment_intent": None, "amount_refunded": 100, "currency": "eur"}

    [event] = stripe.parse(stripe_event("charge.refunded", obj))

    assert event.provider_reference == "ch_2"


def test_parse_dispute_uses_payment_intent_and_reason() -> None:
    obj = {
        "id": "dp_1",
        "charge": "ch_3",
        "payment_intent": "pi_3",
        "reason": "fraudulent",
        "amount": 1,
        "currency": "eur",
    }

    [event] = stripe.parse(stripe_event("charge.dispute.created", obj))

    assert (event.provider_reference, event.outcome, event.failure_code) == (
        "pi_3",
        WebhookOutcome.REVERSED,
        "fraudulent",
    )


def test_parse_published_vector_body_records_ignored_event() -> None:
    [event] = stripe.parse(DOTNET_BODY)

    assert (event.event_id, event.event_type, event.outcome) == ("evt_123", "customer.created", WebhookOutcome.IGNORED)


@pytest.mark.parametrize(
    "body",
    [
        b"this is not valid JSON",
        b"[]",
        b'{"type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}',
        b'{"id": "evt_1", "data": {"object": {"id": "pi_1"}}}',
        b'{"id": "evt_1", "type": "payment_intent.succeeded"}',
        b'{"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "payment_intent.succeeded", "created": "yesterday", "data": {"object": {"id": "p"}}}',
        b"\xff\xfe not utf-8",
        b"[" * 100_000,
    ],
)
def test_parse_malformed_payload_raises_payload_invalid(body: bytes) -> None:
    with pytest.raises(WebhookPayloadInvalid) as excinfo:
        stripe.parse(body)
    assert excinfo.value.code == "webhook_payload_invalid"


# --- amounts ------------------------------------------------------------------------------------------------------


def test_parse_succeeded_intent_reads_amount_received_and_upper_cases_currency() -> None:
    # A partial capture: the intent asked for 2000 but collected 1500, and 1500 is what was paid.
    obj = {"id": "pi_1", "object": "payment_intent", "amount": 2000, "amount_received": 1500, "currency": "eur"}

    [event] = stripe.parse(stripe_event("payment_intent.succeeded", obj))

    assert (event.amount, event.currency) == (1500, "EUR")


def test_parse_succeeded_intent_without_amount_received_reads_amount() -> None:
    obj = {"id": "pi_1", "object": "payment_intent", "amount": 2000, "currency": "usd"}

    [event] = stripe.parse(stripe_event("payment_intent.succeeded", obj))

    assert (event.amount, event.currency) == (2000, "USD")


def test_parse_failed_intent_reads_the_amount_asked_not_the_zero_received() -> None:
    obj = {"id": "pi_1", "object": "payment_intent", "amount": 2000, "amount_received": 0, "currency": "eur"}

    [event] = stripe.parse(stripe_event("payment_intent.payment_failed", obj))

    assert (event.amount, event.currency) == (2000, "EUR")


@pytest.mark.parametrize("event_type", ["charge.succeeded", "charge.failed"])
def test_parse_charge_reads_its_amount_in_minor_units(event_type: str) -> None:
    obj = {"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 500, "currency": "jpy"}

    [event] = stripe.parse(stripe_event(event_type, obj))

    assert (event.amount, event.currency) == (500, "JPY")


@pytest.mark.parametrize("event_type", ["charge.refunded", "charge.dispute.created"])
def test_parse_reversal_carries_no_payment_amount(event_type: str) -> None:
    # A refund's or dispute's amount may be partial: it is not the payment's, so nothing compares it.
    obj = {"id": "dp_1", "payment_intent": "pi_1", "amount": 300, "amount_refunded": 300, "currency": "eur"}

    [event] = stripe.parse(stripe_event(event_type, obj))

    assert (event.amount, event.currency) == (None, None)


def test_parse_object_without_amount_or_currency_carries_none() -> None:
    [event] = stripe.parse(stripe_event("payment_intent.succeeded", {"id": "pi_1"}))

    assert (event.amount, event.currency) == (None, None)


@pytest.mark.parametrize(
    "money",
    [
        {"amount_received": 1999.0, "currency": "eur"},
        {"amount_received": "1999", "currency": "eur"},
        {"amount_received": True, "currency": "eur"},
        {"amount_received": -1, "currency": "eur"},
        {"amount_received": 10**19, "currency": "eur"},
        {"amount_received": 1999},
        {"currency": "eur"},
        {"amount_received": 1999, "currency": "euro"},
        {"amount_received": 1999, "currency": "xyz"},
        {"amount_received": 1999, "currency": 978},
    ],
    ids=[
        "float",
        "string",
        "bool",
        "negative",
        "beyond_bigint",
        "no_currency",
        "no_amount",
        "long_code",
        "unknown_code",
        "numeric_code",
    ],
)
def test_parse_malformed_amount_raises_payload_invalid(money: dict[str, object]) -> None:
    body = stripe_event("payment_intent.succeeded", {"id": "pi_1", **money})

    with pytest.raises(WebhookPayloadInvalid) as excinfo:
        stripe.parse(body)
    assert excinfo.value.code == "webhook_payload_invalid"
