"""Per-container wiring of the webhook function: provider registry, signing secrets and the database connection.

The function reads no settings of its own: secret names derive from billing.resource_names.webhook_secret_name and
the database from the variables ConnectionProvider validates, so there is nothing else to get wrong at cold start.
"""

from __future__ import annotations

from collections.abc import Mapping

from billing.db.connection_provider import ConnectionProvider
from billing.db.roles import DatabaseRole
from billing.services.webhook_processing import WebhookProcessor
from billing.webhooks.registry import WebhookProvider, build_registry
from billing.webhooks.secrets import DEFAULT_MAX_AGE_SECONDS, WebhookSecretStore
from billing.webhooks.verification import Clock, utc_now


class WebhookRuntime:
    """Everything the webhook function needs, built once per Lambda container and reused while it is warm."""

    def __init__(
        self,
        connections: ConnectionProvider | None = None,
        *,
        registry: Mapping[str, WebhookProvider] | None = None,
        secrets: WebhookSecretStore | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.connections = connections or ConnectionProvider(role=DatabaseRole.APP)
        self.registry = registry if registry is not None else build_registry()
        self.clock = clock
        self._secrets = secrets

    @property
    def secrets(self) -> WebhookSecretStore:
        """Built on first use, not at import: creating the Secrets Manager client costs cold-start time."""
        if self._secrets is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            # Values are cached per container for the TTL; a rotation keeps the old secret listed for longer.
            self._secrets = WebhookSecretStore(SecretsProvider(), max_age_seconds=DEFAULT_MAX_AGE_SECONDS)
        return self._secrets

    def processor(self) -> WebhookProcessor:
        return WebhookProcessor(self.connections.get())
