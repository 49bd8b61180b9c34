"""The vault function's wiring: settings validated at cold start, KMS and the fingerprint keys on first use."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from billing import resource_names as names

# Only the settings are needed at cold start; the vault, KMS, the fingerprint keys and the database connection
# (psycopg, cryptography, boto3) are imported by the method that first builds them.
if TYPE_CHECKING:
    from billing.db.connection_provider import ConnectionProvider
    from billing.instruments.fingerprints import FingerprintKeys
    from billing.vault.kms import KmsDataKeys
    from billing.vault.provisioning import ProviderTokenizer
    from billing.vault.service import VaultService


class VaultSettings(BaseModel):
    """What the vault function reads from its environment; a missing variable fails the cold start."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    kms_key_id: str = Field(alias=names.ENV_VAULT_KMS_KEY_ID, min_length=1)
    fingerprint_secret_id: str = Field(alias=names.ENV_FINGERPRINT_SECRET_ID, min_length=1)

    @classmethod
    def from_environment(cls) -> VaultSettings:
        return cls.model_validate(dict(os.environ))


class VaultRuntime:
    """Everything the vault function needs, built once per Lambda container and reused while it is warm."""

    # What the methods below import on first use (billing.aws.cold_start.preload loads them when init is paid ahead).
    DEFERRED_MODULES: Final = (
        "billing.db.connection_provider",
        "billing.instruments.fingerprints",
        "billing.providers.credentials",
        "billing.providers.directory",
        "billing.vault.kms",
        "billing.vault.provisioning",
        "billing.vault.service",
        "billing.vault.vault",
    )

    def __init__(
        self,
        settings: VaultSettings,
        connections: ConnectionProvider | None = None,
        *,
        kms_client: Any | None = None,
        fingerprint_keys: FingerprintKeys | None = None,
    ) -> None:
        self.settings = settings
        self._given_connections = connections
        self._kms_client = kms_client
        self._fingerprint_keys = fingerprint_keys

    @cached_property
    def connections(self) -> ConnectionProvider:
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return self._given_connections or ConnectionProvider(role=DatabaseRole.VAULT)

    @cached_property
    def data_keys(self) -> KmsDataKeys:
        from billing.vault.kms import KmsDataKeys

        return KmsDataKeys(self.settings.kms_key_id, self._kms_client)

    @cached_property
    def fingerprint_keys(self) -> FingerprintKeys:
        from billing.instruments.fingerprints import SecretsManagerFingerprintKeys

        return self._fingerprint_keys or SecretsManagerFingerprintKeys(self.settings.fingerprint_secret_id)

    def instrument_service(self) -> VaultService:
        from billing.vault.service import VaultService
        from billing.vault.vault import CardVault

        conn = self.connections.get()
        return VaultService(conn, CardVault(conn, self.data_keys), self.fingerprint_keys, self.tokenizers)

    @cached_property
    def tokenizers(self) -> list[ProviderTokenizer]:
        """A token per configured card provider, so routing can charge a saved card through any of them."""
        from billing.providers.credentials import stripe_credentials
        from billing.providers.directory import ENV_STRIPE_API_BASE, ENV_STRIPE_SECRET_ID, ENV_STRIPE_SERVER_PROFILE
        from billing.vault.provisioning import SandboxCardTokenizer

        tokenizers: list[ProviderTokenizer] = [SandboxCardTokenizer()]
        secret_id = os.environ.get(ENV_STRIPE_SECRET_ID)
        if secret_id:
            from billing.providers.stripe.server_profile import profile_named
            from billing.providers.stripe.tokenizer import StripeCardTokenizer

            tokenizers.append(
                StripeCardTokenizer(
                    stripe_credentials(secret_id).for_tenant,
                    api_base=os.environ.get(ENV_STRIPE_API_BASE) or None,
                    profile=profile_named(os.environ.get(ENV_STRIPE_SERVER_PROFILE) or "stripe"),
                )
            )
        return tokenizers
