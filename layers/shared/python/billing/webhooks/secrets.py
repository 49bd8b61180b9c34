"""Webhook signing secrets: read from Secrets Manager with a TTL cache, seeded locally (moto) at start-up.

Each provider's secret `billing/webhook/<provider>` holds a JSON list of the currently valid secrets, so a rotation
has an overlap window: add the new secret to the list, wait at least the cache TTL, switch the provider to it, then
remove the old one. A plain (non-list) string is accepted as a single secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from botocore.exceptions import ClientError

from billing.resource_names import WEBHOOK_PROVIDERS, webhook_secret_name

DEFAULT_MAX_AGE_SECONDS: Final = 300

ENV_WEBHOOK_SECRETS: Final = "BILLING_WEBHOOK_SECRETS"

# Local development and tests only, seeded into moto when BILLING_WEBHOOK_SECRETS is unset. Deliberately named and
# shaped so that nobody mistakes them for, or reuses them as, production secrets. The Adyen one is hex because Adyen
# keys are hex-decoded before use.
DEV_WEBHOOK_SECRETS: Final[Mapping[str, tuple[str, ...]]] = {
    "stripe": ("whsec_dev_stripe_NOT_FOR_PRODUCTION",),
    "adyen": ("00DE7000DE7000DE7000DE7000DE7000DE7000DE7000DE7000DE7000DE7000DE",),
    "gocardless": ("dev_gocardless_NOT_FOR_PRODUCTION",),
    "sandbox": ("whsec_dev_sandbox_NOT_FOR_PRODUCTION",),
}


class WebhookSecretsMisconfigured(RuntimeError):
    """A stored secret, or the seeding input, does not have the expected shape: a deployment fault (500)."""


def parse_secret_value(name: str, value: str | bytes) -> tuple[str, ...]:
    """A JSON list of non-empty strings, or a plain string taken whole as the only secret."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    if not text.lstrip().startswith("["):
        if not text:
            raise WebhookSecretsMisconfigured(f"secret {name} is empty")
        return (text,)
    try:
        secrets = json.loads(text)
    except ValueError as exc:
        raise WebhookSecretsMisconfigured(f"secret {name} is not a valid JSON list") from exc
    # Never echo the value in the message: it is the secret.
    if not isinstance(secrets, list) or not secrets or not all(isinstance(s, str) and s for s in secrets):
        raise WebhookSecretsMisconfigured(f"secret {name} must be a non-empty JSON list of non-empty strings")
    return tuple(secrets)


class WebhookSecretStore:
    """Current secrets per provider, from Secrets Manager through Powertools' cached SecretsProvider."""

    def __init__(
        self,
        provider: SecretsProvider,
        *,
        max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS,
    ) -> None:
        if max_age_seconds < 0:
            raise ValueError("max_age_seconds must be >= 0")
        self._provider = provider
        self._max_age_seconds = max_age_seconds

    def secrets_for(self, provider: str) -> tuple[str, ...]:
        """Every currently valid secret for `provider`, at most `max_age_seconds` stale.

        Raises Powertools' GetParameterError when the secret cannot be read and WebhookSecretsMisconfigured when it
        is malformed; both are infrastructure faults, never a reason to accept or reject a particular delivery.
        ValueError for a provider outside resource_names.WEBHOOK_PROVIDERS: no lookup is made for it.
        """
        name = webhook_secret_name(provider)
        value = self._provider.get(name, max_age=self._max_age_seconds)
        if not isinstance(value, str | bytes):
            raise WebhookSecretsMisconfigured(f"secret {name} has no string value")
        return parse_secret_value(name, value)


class SecretsManagerWriter(Protocol):
    """The two Secrets Manager calls seeding needs (a boto3 secretsmanager client satisfies it)."""

    def create_secret(self, **kwargs: Any) -> Any: ...

    def put_secret_value(self, **kwargs: Any) -> Any: ...


def seed_webhook_secrets(
    client: SecretsManagerWriter,
    secrets_by_provider: Mapping[str, Sequence[str]],
) -> None:
    """Create or overwrite each provider's secret list. For the local stack (moto) and tests, not deployed stacks."""
    for provider, secrets in secrets_by_provider.items():
        name = webhook_secret_name(provider)
        value = json.dumps(list(secrets))
        try:
            client.create_secret(Name=name, SecretString=value)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceExistsException":
                raise
            client.put_secret_value(SecretId=name, SecretString=value)


def webhook_secrets_from_env(environ: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """The seeding input: BILLING_WEBHOOK_SECRETS (JSON provider -> list of secrets) when set, else the dev defaults.

    A set but malformed variable is an error, never a silent fall-back to the defaults.
    """
    raw = environ.get(ENV_WEBHOOK_SECRETS)
    if raw is None:
        return {provider: tuple(secrets) for provider, secrets in DEV_WEBHOOK_SECRETS.items()}
    try:
        mapping = json.loads(raw)
    except ValueError as exc:
        raise WebhookSecretsMisconfigured(f"{ENV_WEBHOOK_SECRETS} is not valid JSON") from exc
    if not isinstance(mapping, dict) or not mapping:
        raise WebhookSecretsMisconfigured(f"{ENV_WEBHOOK_SECRETS} must be a JSON object: provider -> list of secrets")
    result: dict[str, tuple[str, ...]] = {}
    for provider, secrets in mapping.items():
        if provider not in WEBHOOK_PROVIDERS:
            raise WebhookSecretsMisconfigured(f"{ENV_WEBHOOK_SECRETS} names unknown provider {provider[:64]!r}")
        if not isinstance(secrets, list) or not secrets or not all(isinstance(s, str) and s for s in secrets):
            raise WebhookSecretsMisconfigured(
                f"{ENV_WEBHOOK_SECRETS}[{provider!r}] must be a non-empty list of non-empty strings"
            )
        result[provider] = tuple(secrets)
    return result
