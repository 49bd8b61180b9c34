"""Per-container wiring of the webhook function: provider registry, signing secrets and the database connection.

The function reads no settings of its own: secret names derive from billing.resource_names.webhook_secret_name and
the database from the variables ConnectionProvider validates, so there is nothing else to get wrong at cold start.
Everything here is built on first use, not at import: the registry loads every provider's parser, the secret store
boto3, and the database connection psycopg.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Final

from billing.webhooks.verification import Clock, utc_now

if TYPE_CHECKING:
    from billing.db.connection_provider import ConnectionProvider
    from billing.services.webhook_processing import WebhookProcessor
    from billing.webhooks.registry import WebhookProvider
    from billing.webhooks.secrets import WebhookSecretStore


class WebhookRuntime:
    """Everything the webhook function needs, built once per Lambda container and reused while it is warm."""

    # What the methods below import on first use (billing.aws.cold_start.preload loads them when init is paid ahead).
    DEFERRED_MODULES: Final = (
        "billing.db.connection_provider",
        "billing.webhooks.registry",
        "billing.webhooks.secrets",
        "aws_lambda_powertools.utilities.parameters",
        "billing.services.webhook_processing",
    )

    def __init__(
        self,
        connections: ConnectionProvider | None = None,
        *,
        registry: Mapping[str, WebhookProvider] | None = None,
        secrets: WebhookSecretStore | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._given_connections = connections
        self._given_registry = registry
        self.clock = clock
        self._secrets = secrets

    @cached_property
    def connections(self) -> ConnectionProvider:
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return self._given_connections or ConnectionProvider(role=DatabaseRole.APP)

    @cached_property
    def registry(self) -> Mapping[str, WebhookProvider]:
        from billing.webhooks.registry import build_registry

        return self._given_registry if self._given_registry is not None else build_registry()

    @property
    def secrets(self) -> WebhookSecretStore:
        """Built on first use, not at import: creating the Secrets Manager client costs cold-start time."""
        if self._secrets is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            from billing.webhooks.secrets import DEFAULT_MAX_AGE_SECONDS, WebhookSecretStore

            # Values are cached per container for the TTL; a rotation keeps the old secret listed for longer.
            self._secrets = WebhookSecretStore(SecretsProvider(), max_age_seconds=DEFAULT_MAX_AGE_SECONDS)
        return self._secrets

    def processor(self) -> WebhookProcessor:
        from billing.services.webhook_processing import WebhookProcessor

        return WebhookProcessor(self.connections.get())
