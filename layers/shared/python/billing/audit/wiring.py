"""Per-container wiring of the audit functions and the CLI: settings validated at cold start, clients on first use."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field, Json

from billing import resource_names as names

# Only the settings are needed at cold start; the checkpointer, its keys and stores and the database connection
# (psycopg, cryptography) are imported by the method that first builds them.
if TYPE_CHECKING:
    from billing.audit.s3 import S3CheckpointStore
    from billing.audit.sequencer import AuditCheckpointer
    from billing.db.connection_provider import ConnectionProvider


class CheckpointSettings(BaseModel):
    """What the audit_checkpoint function reads from its environment; a missing variable fails the cold start."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    key_secret_id: str = Field(alias=names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID, min_length=1)
    bucket: str = Field(alias=names.ENV_AUDIT_CHECKPOINTS_BUCKET, min_length=1)
    # AWS sets "true"; unset (a local run) means "use Object Lock when the bucket has it".
    require_object_lock: bool = Field(False, alias=names.ENV_AUDIT_REQUIRE_OBJECT_LOCK)
    # Secrets whose rotations become audit entries (billing.audit.rotations); none if unset.
    watched_credentials: Json[list[str]] = Field(default_factory=list, alias=names.ENV_AUDIT_WATCHED_CREDENTIALS)
    # The authorizer's rejected tokens (billing.audit.intake); the CDK app and the local stack always set it, and a
    # run without it (a test of the tree alone) drains nothing.
    intake_queue_url: str | None = Field(None, alias=names.ENV_AUDIT_INTAKE_QUEUE_URL, min_length=1)

    @classmethod
    def from_environment(cls) -> CheckpointSettings:
        return cls.model_validate(dict(os.environ))


def checkpoint_store(s3: Any, bucket: str, *, require_object_lock: bool = False) -> S3CheckpointStore:
    from billing.audit.s3 import S3CheckpointStore

    return S3CheckpointStore(
        s3,
        bucket,
        retention=timedelta(days=names.AUDIT_CHECKPOINT_RETENTION_DAYS),
        require_object_lock=require_object_lock,
    )


class CheckpointRuntime:
    """The checkpointer, built once per container and reused while it is warm."""

    # What the methods below import on first use (billing.aws.cold_start.preload loads them when init is paid ahead).
    DEFERRED_MODULES: Final = (
        "billing.db.connection_provider",
        "billing.audit.intake",
        "billing.audit.keys",
        "billing.audit.rotations",
        "billing.audit.s3",
        "billing.audit.sequencer",
        "boto3",
    )

    def __init__(self, settings: CheckpointSettings, connections: ConnectionProvider | None = None) -> None:
        self.settings = settings
        self._given_connections = connections

    @cached_property
    def connections(self) -> ConnectionProvider:
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return self._given_connections or ConnectionProvider(role=DatabaseRole.WORKER)

    @cached_property
    def _clients(self) -> tuple[Any, Any, Any]:
        import boto3  # deferred: boto3 costs ~100 ms of cold start

        return boto3.client("secretsmanager"), boto3.client("s3"), boto3.client("sqs")

    @cached_property
    def store(self) -> S3CheckpointStore:
        return checkpoint_store(
            self._clients[1], self.settings.bucket, require_object_lock=self.settings.require_object_lock
        )

    def record_auth_failures(self) -> int:
        """Record the rejected tokens waiting in the intake queue (at least once); how many."""
        from billing.audit.intake import drain_auth_failures

        if self.settings.intake_queue_url is None:
            return 0
        return drain_auth_failures(self.connections.get(), self._clients[2], self.settings.intake_queue_url)

    def record_rotations(self) -> list[str]:
        """Audit every watched secret whose current version is new since the last run; their names."""
        from billing.audit.rotations import SecretsManagerVersions, record_rotations

        versions = SecretsManagerVersions(self._clients[0])
        return record_rotations(self.connections.get(), versions, self.settings.watched_credentials)

    def checkpointer(self) -> AuditCheckpointer:
        from billing.audit.keys import SecretsManagerKeyRing
        from billing.audit.sequencer import AuditCheckpointer

        keys = SecretsManagerKeyRing(self._clients[0], self.settings.key_secret_id)
        return AuditCheckpointer(self.connections.get(), keys, self.store)
