"""Provider name -> (verifier, parser), and the one function that keeps "verify, then parse" in that order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType

from billing.domain.errors import UnknownWebhookProvider
from billing.webhooks import adyen, gocardless, sandbox, stripe
from billing.webhooks.events import WebhookEvent, WebhookParser
from billing.webhooks.verification import DEFAULT_TOLERANCE, RawWebhook, WebhookVerifier


@dataclass(frozen=True, slots=True)
class WebhookProvider:
    """One provider's signature scheme and payload parser."""

    name: str
    verifier: WebhookVerifier
    parse: WebhookParser

    def verify_and_parse(self, raw: RawWebhook, secrets: Sequence[str]) -> list[WebhookEvent]:
        """Verify the raw bytes, then (and only then) parse them. Raises SignatureInvalid / WebhookPayloadInvalid."""
        self.verifier.verify(raw, secrets)
        return self.parse(raw.body)


def build_registry(*, tolerance: timedelta = DEFAULT_TOLERANCE) -> Mapping[str, WebhookProvider]:
    """Every provider we accept webhooks from; `tolerance` bounds the signed timestamp where a scheme has one."""
    providers = (
        WebhookProvider(stripe.PROVIDER, stripe.verifier(tolerance), stripe.parse),
        WebhookProvider(adyen.PROVIDER, adyen.verifier(), adyen.parse),
        WebhookProvider(gocardless.PROVIDER, gocardless.verifier(), gocardless.parse),
        WebhookProvider(sandbox.PROVIDER, sandbox.verifier(tolerance), sandbox.parse),
    )
    return MappingProxyType({provider.name: provider for provider in providers})


def provider_for(name: str, registry: Mapping[str, WebhookProvider]) -> WebhookProvider:
    """The provider registered under `name` (exact, lower case), else UnknownWebhookProvider."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownWebhookProvider(name) from None
