from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from billing.domain.errors import SignatureInvalid, UnknownWebhookProvider
from billing.webhooks import stripe
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from billing.webhooks.registry import WebhookProvider, build_registry, provider_for
from billing.webhooks.verification import RawWebhook
from tests.unit.webhooks.factories import NOW_UNIX, at, raw, stripe_event

SECRET = "whsec_registry"


def test_build_registry_knows_every_documented_provider() -> None:
    assert set(build_registry()) == {"stripe", "adyen", "gocardless", "sandbox"}


@pytest.mark.parametrize("name", ["paypal", "Stripe", "", "stripe/../adyen"])
def test_provider_for_unknown_name_raises_unknown_provider(name: str) -> None:
    with pytest.raises(UnknownWebhookProvider) as excinfo:
        provider_for(name, build_registry())
    assert excinfo.value.code == "webhook_provider_unknown"


def test_unknown_provider_detail_bounds_the_attacker_supplied_name() -> None:
    error = UnknownWebhookProvider("x" * 10_000)

    assert len(error.detail) < 120


def test_verify_and_parse_authentic_delivery_returns_events() -> None:
    body = stripe_event("payment_intent.succeeded", {"id": "pi_77"})
    delivery = raw("stripe", body, {"Stripe-Signature": stripe.sign(body, SECRET, NOW_UNIX)})

    [event] = provider_for("stripe", build_registry()).verify_and_parse(delivery, [SECRET])

    assert (event.provider_reference, event.outcome) == ("pi_77", WebhookOutcome.SUCCEEDED)


def test_verify_and_parse_forged_delivery_never_reaches_parser() -> None:
    parsed: list[bytes] = []

    def spy_parse(body: bytes) -> list[WebhookEvent]:
        parsed.append(body)
        return []

    provider = WebhookProvider("stripe", stripe.verifier(), spy_parse)
    delivery = raw("stripe", stripe_event("charge.succeeded"), {"Stripe-Signature": f"t={NOW_UNIX},v1={'0' * 64}"})

    with pytest.raises(SignatureInvalid):
        provider.verify_and_parse(delivery, [SECRET])
    assert parsed == []


def test_build_registry_tolerance_applies_to_timestamped_schemes() -> None:
    body = stripe_event("payment_intent.succeeded")
    stale = raw("stripe", body, {"Stripe-Signature": stripe.sign(body, SECRET, NOW_UNIX)}, received_at=at(60))
    strict = provider_for("stripe", build_registry(tolerance=timedelta(seconds=30)))

    provider_for("stripe", build_registry()).verify_and_parse(stale, [SECRET])
    with pytest.raises(SignatureInvalid):
        strict.verify_and_parse(stale, [SECRET])


class _RecordingVerifier:
    def __init__(self) -> None:
        self.secrets: Sequence[str] = ()

    def verify(self, raw: RawWebhook, secrets: Sequence[str]) -> None:
        self.secrets = secrets


def test_verify_and_parse_passes_every_secret_to_verifier() -> None:
    verifier = _RecordingVerifier()
    provider = WebhookProvider("sandbox", verifier, lambda body: [])

    provider.verify_and_parse(raw("sandbox", b"{}"), ["new", "old"])

    assert list(verifier.secrets) == ["new", "old"]
