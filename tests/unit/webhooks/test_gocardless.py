from __future__ import annotations

import json

import pytest

from billing.domain.errors import SignatureInvalid, WebhookPayloadInvalid
from billing.webhooks import gocardless
from billing.webhooks.events import WebhookOutcome
from billing.webhooks.verification import RawWebhook, SignatureFailure
from tests.unit.webhooks.factories import api_gateway_event, gocardless_batch, gocardless_event, raw

SECRET = "gc_webhook_secret_current"
OLD_SECRET = "gc_webhook_secret_previous"

# Published vector: gocardless/gocardless-pro-python, tests/webhooks_test.py with tests/fixtures/webhook_body.json
# (read there with .strip(), so without the file's trailing newline). The same secret, body and signature appear in
# gocardless-pro-java src/test/java/com/gocardless/WebhookTest.java.
VECTOR_SECRET = "ED7D658C-D8EB-4941-948B-3973214F2D49"
VECTOR_SIGNATURE = "2693754819d3e32d7e8fcb13c729631f316c6de8dc1cf634d6527f1c07276e7e"
VECTOR_BODY = (
    b'{"events":[{"id":"EV00BD05S5VM2T","created_at":"2018-07-05T09:13:51.404Z","resource_type":"subscriptions",'
    b'"action":"created","links":{"subscription":"SB0003JJQ2MR06"},"details":{"origin":"api",'
    b'"cause":"subscription_created","description":"Subscription created via the API."},"metadata":{}},'
    b'{"id":"EV00BD05TB8K63","created_at":"2018-07-05T09:13:56.893Z","resource_type":"mandates",'
    b'"action":"created","links":{"mandate":"MD000AMA19XGEC"},"details":{"origin":"api",'
    b'"cause":"mandate_created","description":"Mandate created via the API."},"metadata":{}}]}'
)


def _delivery(body: bytes, signature: str | None) -> RawWebhook:
    return raw("gocardless", body, {} if signature is None else {"Webhook-Signature": signature})


def _reason(excinfo: pytest.ExceptionInfo[SignatureInvalid]) -> str:
    return excinfo.value.reason


# --- published vector ---------------------------------------------------------------------------------------------


def test_sign_published_vector_matches_gocardless_pro_python() -> None:
    assert gocardless.sign(VECTOR_BODY, VECTOR_SECRET) == VECTOR_SIGNATURE


def test_verify_published_vector_accepts() -> None:
    gocardless.verifier().verify(_delivery(VECTOR_BODY, VECTOR_SIGNATURE), [VECTOR_SECRET])


def test_verify_published_vector_with_wrong_key_rejects_mismatch() -> None:
    # gocardless-pro-python's test_it_raises_with_invalid_signature uses the key "anotherkey".
    with pytest.raises(SignatureInvalid) as excinfo:
        gocardless.verifier().verify(_delivery(VECTOR_BODY, VECTOR_SIGNATURE), ["anotherkey"])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_published_vector_with_trailing_newline_rejects_mismatch() -> None:
    with pytest.raises(SignatureInvalid):
        gocardless.verifier().verify(_delivery(VECTOR_BODY + b"\n", VECTOR_SIGNATURE), [VECTOR_SECRET])


def test_parse_published_vector_returns_both_events_ignored() -> None:
    events = gocardless.parse(VECTOR_BODY)

    assert [(e.event_id, e.event_type, e.outcome) for e in events] == [
        ("EV00BD05S5VM2T", "subscriptions.created", WebhookOutcome.IGNORED),
        ("EV00BD05TB8K63", "mandates.created", WebhookOutcome.IGNORED),
    ]
    assert events[0].occurred_at is not None
    assert events[0].occurred_at.isoformat() == "2018-07-05T09:13:51.404000+00:00"


# --- signature ----------------------------------------------------------------------------------------------------


def test_verify_tampered_body_rejects_mismatch() -> None:
    body = gocardless_batch(gocardless_event("confirmed"))
    signature = gocardless.sign(body, SECRET)

    with pytest.raises(SignatureInvalid) as excinfo:
        gocardless.verifier().verify(_delivery(body.replace(b"confirmed", b"failed"), signature), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_wrong_secret_rejects_mismatch() -> None:
    body = gocardless_batch(gocardless_event("confirmed"))

    with pytest.raises(SignatureInvalid):
        gocardless.verifier().verify(_delivery(body, gocardless.sign(body, "attacker")), [SECRET])


@pytest.mark.parametrize("signing_secret", [OLD_SECRET, SECRET])
def test_verify_during_rotation_overlap_accepts_old_and_new_secret(signing_secret: str) -> None:
    body = gocardless_batch(gocardless_event("confirmed"))

    gocardless.verifier().verify(_delivery(body, gocardless.sign(body, signing_secret)), [SECRET, OLD_SECRET])


def test_verify_batch_with_one_altered_event_rejects_whole_delivery() -> None:
    events = [gocardless_event("confirmed", event_id=f"EV{n}", payment=f"PM{n}") for n in range(3)]
    body = gocardless_batch(*events)
    signature = gocardless.sign(body, SECRET)
    events[1]["action"] = "charged_back"

    with pytest.raises(SignatureInvalid) as excinfo:
        gocardless.verifier().verify(_delivery(gocardless_batch(*events), signature), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


@pytest.mark.parametrize("signature", [None, "", "  "])
def test_verify_missing_header_rejects_missing_header(signature: str | None) -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        gocardless.verifier().verify(_delivery(gocardless_batch(gocardless_event("paid_out")), signature), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISSING_HEADER


def test_verify_signature_in_upper_case_hex_rejects_mismatch() -> None:
    # GoCardless sends lower-case hex and its own libraries compare exactly; so do we.
    body = gocardless_batch(gocardless_event("paid_out"))

    with pytest.raises(SignatureInvalid):
        gocardless.verifier().verify(_delivery(body, gocardless.sign(body, SECRET).upper()), [SECRET])


def test_verify_base64_encoded_api_gateway_body_accepts() -> None:
    event = api_gateway_event("gocardless", VECTOR_BODY, {"webhook-signature": VECTOR_SIGNATURE}, base64_encoded=True)

    gocardless.verifier().verify(RawWebhook.from_api_gateway_event(event), [VECTOR_SECRET])


# --- parsing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        ("confirmed", WebhookOutcome.SUCCEEDED),
        ("paid_out", WebhookOutcome.SUCCEEDED),
        ("failed", WebhookOutcome.FAILED),
        ("cancelled", WebhookOutcome.FAILED),
        ("customer_approval_denied", WebhookOutcome.FAILED),
        ("charged_back", WebhookOutcome.REVERSED),
        ("late_failure_settled", WebhookOutcome.REVERSED),
        ("created", WebhookOutcome.IGNORED),
        ("submitted", WebhookOutcome.IGNORED),
    ],
)
def test_parse_payment_action_maps_to_outcome(action: str, outcome: WebhookOutcome) -> None:
    [event] = gocardless.parse(gocardless_batch(gocardless_event(action)))

    assert event.outcome is outcome
    assert event.event_type == f"payments.{action}"


def test_parse_failed_payment_reads_reference_and_cause() -> None:
    [event] = gocardless.parse(gocardless_batch(gocardless_event("failed", event_id="EV9", payment="PM9")))

    assert (event.provider, event.event_id, event.provider_reference) == ("gocardless", "EV9", "PM9")
    assert event.failure_code == "payment_failed"


def test_parse_confirmed_payment_has_no_failure_code() -> None:
    [event] = gocardless.parse(gocardless_batch(gocardless_event("confirmed")))

    assert event.failure_code is None


def test_parse_same_action_on_other_resource_is_ignored() -> None:
    [event] = gocardless.parse(gocardless_batch(gocardless_event("failed", resource_type="mandates", payment=None)))

    assert event.outcome is WebhookOutcome.IGNORED
    assert event.provider_reference is None


def test_parse_batch_returns_one_event_per_entry_in_order() -> None:
    body = gocardless_batch(*(gocardless_event("confirmed", event_id=f"EV{n}", payment=f"PM{n}") for n in range(3)))

    assert [e.event_id for e in gocardless.parse(body)] == ["EV0", "EV1", "EV2"]


def test_parse_actionable_event_without_payment_link_raises_payload_invalid() -> None:
    with pytest.raises(WebhookPayloadInvalid, match=r"events\[0\]\.links\.payment"):
        gocardless.parse(gocardless_batch(gocardless_event("confirmed", payment=None)))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"events": []}',
        b'{"events": {}}',
        json.dumps({"events": [{"resource_type": "payments", "action": "confirmed"}]}).encode(),
        json.dumps({"events": [{"id": "EV1", "action": "confirmed"}]}).encode(),
        json.dumps({"events": [{"id": "EV1", "resource_type": "payments"}]}).encode(),
        json.dumps({"events": [{"id": "EV1", "resource_type": "m", "action": "x", "created_at": "soon"}]}).encode(),
    ],
)
def test_parse_malformed_batch_raises_payload_invalid(body: bytes) -> None:
    with pytest.raises(WebhookPayloadInvalid):
        gocardless.parse(body)


@pytest.mark.parametrize("action", ["confirmed", "paid_out", "failed"])
def test_parse_payment_event_carries_no_amount_because_gocardless_sends_none(action: str) -> None:
    event = {**gocardless_event(action), "amount": 1999, "currency": "GBP"}

    [parsed] = gocardless.parse(gocardless_batch(event))

    assert (parsed.amount, parsed.currency) == (None, None)
