from __future__ import annotations

import pytest

from billing.domain.errors import SignatureInvalid, WebhookPayloadInvalid
from billing.webhooks import sandbox, stripe
from billing.webhooks.events import WebhookOutcome
from billing.webhooks.verification import RawWebhook, SignatureFailure
from tests.unit.webhooks.factories import NOW_UNIX, api_gateway_event, at, raw, sandbox_event

SECRET = "whsec_dev_sandbox_test"
OLD_SECRET = "whsec_dev_sandbox_previous"


def _delivery(body: bytes, header: str | None, *, received_offset: float = 0) -> RawWebhook:
    headers = {} if header is None else {"Sandbox-Signature": header}
    return raw("sandbox", body, headers, received_at=at(received_offset))


def _reason(excinfo: pytest.ExceptionInfo[SignatureInvalid]) -> str:
    return excinfo.value.reason


def test_sign_uses_stripe_scheme_bit_for_bit() -> None:
    body = sandbox_event("payment.succeeded")

    assert sandbox.sign(body, SECRET, NOW_UNIX) == stripe.sign(body, SECRET, NOW_UNIX)


def test_verify_signed_delivery_accepts() -> None:
    body = sandbox_event("payment.succeeded")

    sandbox.verifier().verify(_delivery(body, sandbox.sign(body, SECRET, NOW_UNIX)), [SECRET])


def test_verify_signature_under_stripe_header_rejects_missing_header() -> None:
    body = sandbox_event("payment.succeeded")
    delivery = raw("sandbox", body, {"Stripe-Signature": sandbox.sign(body, SECRET, NOW_UNIX)})

    with pytest.raises(SignatureInvalid) as excinfo:
        sandbox.verifier().verify(delivery, [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISSING_HEADER
    assert excinfo.value.provider == "sandbox"


def test_verify_tampered_body_rejects_mismatch() -> None:
    body = sandbox_event("payment.failed", failure_code="card_declined")
    header = sandbox.sign(body, SECRET, NOW_UNIX)

    with pytest.raises(SignatureInvalid) as excinfo:
        sandbox.verifier().verify(_delivery(body.replace(b"failed", b"succeeded"), header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISMATCH


def test_verify_delivery_signed_with_stripe_secret_rejects_mismatch() -> None:
    body = sandbox_event("payment.succeeded")

    with pytest.raises(SignatureInvalid):
        sandbox.verifier().verify(_delivery(body, sandbox.sign(body, "whsec_stripe_secret", NOW_UNIX)), [SECRET])


@pytest.mark.parametrize("signing_secret", [OLD_SECRET, SECRET])
def test_verify_during_rotation_overlap_accepts_old_and_new_secret(signing_secret: str) -> None:
    body = sandbox_event("payment.succeeded")

    sandbox.verifier().verify(_delivery(body, sandbox.sign(body, signing_secret, NOW_UNIX)), [SECRET, OLD_SECRET])


@pytest.mark.parametrize(("signed_offset", "received_offset"), [(0, 301), (301, 0)])
def test_verify_expired_or_future_timestamp_rejects_out_of_tolerance(signed_offset: int, received_offset: int) -> None:
    body = sandbox_event("payment.succeeded")
    header = sandbox.sign(body, SECRET, NOW_UNIX + signed_offset)

    with pytest.raises(SignatureInvalid) as excinfo:
        sandbox.verifier().verify(_delivery(body, header, received_offset=received_offset), [SECRET])
    assert _reason(excinfo) == SignatureFailure.TIMESTAMP_OUT_OF_TOLERANCE


@pytest.mark.parametrize("header", [None, ""])
def test_verify_missing_header_rejects_missing_header(header: str | None) -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        sandbox.verifier().verify(_delivery(sandbox_event("payment.succeeded"), header), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MISSING_HEADER


def test_verify_malformed_header_rejects_malformed_header() -> None:
    with pytest.raises(SignatureInvalid) as excinfo:
        sandbox.verifier().verify(_delivery(sandbox_event("payment.succeeded"), "sha256=abc"), [SECRET])
    assert _reason(excinfo) == SignatureFailure.MALFORMED_HEADER


def test_verify_base64_encoded_api_gateway_body_accepts() -> None:
    body = sandbox_event("payment.succeeded")
    event = api_gateway_event(
        "sandbox", body, {"Sandbox-Signature": sandbox.sign(body, SECRET, NOW_UNIX)}, base64_encoded=True
    )

    sandbox.verifier().verify(RawWebhook.from_api_gateway_event(event, clock=lambda: at(5)), [SECRET])


@pytest.mark.parametrize(
    ("event_type", "outcome"),
    [
        ("payment.succeeded", WebhookOutcome.SUCCEEDED),
        ("payment.failed", WebhookOutcome.FAILED),
        ("payment.reversed", WebhookOutcome.REVERSED),
        ("payment.created", WebhookOutcome.IGNORED),
    ],
)
def test_parse_event_type_maps_to_outcome(event_type: str, outcome: WebhookOutcome) -> None:
    [event] = sandbox.parse(sandbox_event(event_type))

    assert event.outcome is outcome


def test_parse_failed_event_reads_id_reference_failure_code_and_time() -> None:
    [event] = sandbox.parse(sandbox_event("payment.failed", event_id="evt_7", reference="sbx_7", failure_code="nsf"))

    assert (event.provider, event.event_id, event.event_type) == ("sandbox", "evt_7", "payment.failed")
    assert (event.provider_reference, event.failure_code, event.occurred_at) == ("sbx_7", "nsf", at(0))


def test_parse_ignored_event_without_data_is_recorded() -> None:
    [event] = sandbox.parse(b'{"id": "evt_8", "type": "ping"}')

    assert (event.outcome, event.provider_reference, event.occurred_at) == (WebhookOutcome.IGNORED, None, None)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"type": "payment.succeeded", "data": {"reference": "r"}}',
        b'{"id": "evt_1", "data": {"reference": "r"}}',
        b'{"id": "evt_1", "type": "payment.succeeded"}',
        b'{"id": "evt_1", "type": "payment.succeeded", "data": {}}',
        b'{"id": "evt_1", "type": "payment.succeeded", "data": {"reference": 7}}',
    ],
)
def test_parse_malformed_event_raises_payload_invalid(body: bytes) -> None:
    with pytest.raises(WebhookPayloadInvalid):
        sandbox.parse(body)


# --- amounts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["payment.succeeded", "payment.failed"])
def test_parse_payment_event_reads_amount_and_currency(event_type: str) -> None:
    [event] = sandbox.parse(sandbox_event(event_type, amount=1999, currency="EUR"))

    assert (event.amount, event.currency) == (1999, "EUR")


def test_parse_event_without_amount_carries_none() -> None:
    [event] = sandbox.parse(sandbox_event("payment.succeeded"))

    assert (event.amount, event.currency) == (None, None)


def test_parse_reversal_carries_no_payment_amount() -> None:
    [event] = sandbox.parse(sandbox_event("payment.reversed", amount=500, currency="EUR"))

    assert (event.amount, event.currency) == (None, None)


def test_parse_amount_in_a_withdrawn_currency_is_read() -> None:
    # Executions taken in BGN before the euro replaced it must still have their confirmations read, not refused.
    [event] = sandbox.parse(sandbox_event("payment.succeeded", amount=1000, currency="BGN"))

    assert (event.amount, event.currency) == (1000, "BGN")


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        (19.99, "EUR"),
        ("1999", "EUR"),
        (True, "EUR"),
        (-1, "EUR"),
        (1999, None),
        (None, "EUR"),
        (1999, "eur"),
        (1999, "XXX"),
        (1999, "E\u00dcR"),
    ],
    ids=[
        "float",
        "string",
        "bool",
        "negative",
        "no_currency",
        "no_amount",
        "lower_case",
        "no_currency_code",
        "unicode",
    ],
)
def test_parse_malformed_amount_raises_payload_invalid(amount: object, currency: object) -> None:
    body = sandbox_event("payment.succeeded", amount=amount, currency=currency)

    with pytest.raises(WebhookPayloadInvalid, match=r"data\.(amount|currency)"):
        sandbox.parse(body)
