from __future__ import annotations

import pytest

from billing.domain.errors import UnknownWebhookProvider, WebhookPayloadInvalid
from billing.webhooks.verification import RawWebhook, WebhookHeaders, constant_time_equals
from tests.unit.webhooks.factories import api_gateway_event, at


def test_from_api_gateway_event_plain_body_keeps_text_as_utf8_bytes() -> None:
    event = api_gateway_event("stripe", '{"a": "é"}'.encode(), {"Stripe-Signature": "t=1,v1=x"})

    delivery = RawWebhook.from_api_gateway_event(event, clock=lambda: at(7))

    assert delivery.provider == "stripe"
    assert delivery.body == '{"a": "é"}'.encode()
    assert delivery.received_at == at(7)


def test_from_api_gateway_event_base64_body_decodes_exact_bytes() -> None:
    body = b'\x00\xff{"binary": true}\r\n'
    event = api_gateway_event("gocardless", body, {}, base64_encoded=True)

    assert RawWebhook.from_api_gateway_event(event).body == body


def test_from_api_gateway_event_invalid_base64_raises_payload_invalid() -> None:
    event = api_gateway_event("stripe", b"{}", {})
    event.update(isBase64Encoded=True, body="not*base64!")

    with pytest.raises(WebhookPayloadInvalid) as excinfo:
        RawWebhook.from_api_gateway_event(event)
    assert excinfo.value.provider == "stripe"


def test_from_api_gateway_event_missing_body_and_headers_yields_empty_values() -> None:
    event = {"pathParameters": {"provider": "sandbox"}, "body": None, "headers": None, "isBase64Encoded": False}

    delivery = RawWebhook.from_api_gateway_event(event)

    assert (delivery.body, len(delivery.headers)) == (b"", 0)


def test_from_api_gateway_event_without_provider_raises_unknown_provider() -> None:
    event = api_gateway_event("stripe", b"{}", {})
    event["pathParameters"] = None

    with pytest.raises(UnknownWebhookProvider):
        RawWebhook.from_api_gateway_event(event)


def test_from_api_gateway_event_explicit_provider_overrides_path() -> None:
    event = api_gateway_event("stripe", b"{}", {})

    assert RawWebhook.from_api_gateway_event(event, provider="sandbox").provider == "sandbox"


def test_headers_lookup_ignores_case_and_drops_null_values() -> None:
    headers = WebhookHeaders({"Stripe-Signature": "sig", "X-Null": None})

    assert headers["stripe-signature"] == headers["STRIPE-SIGNATURE"] == "sig"
    assert "x-null" not in headers
    assert headers.get("webhook-signature") is None


def test_headers_repr_omits_values() -> None:
    assert "secret-value" not in repr(WebhookHeaders({"Stripe-Signature": "secret-value"}))


@pytest.mark.parametrize(
    ("expected", "received", "equal"),
    [("abc", "abc", True), ("abc", "abd", False), ("abc", "ab", False), ("abc", "ab\u00e9", False)],
)
def test_constant_time_equals_compares_any_text(expected: str, received: str, equal: bool) -> None:
    assert constant_time_equals(expected, received) is equal
