"""Per-container wiring of the audit functions and the CLI: settings validated at cold start, clients on first use."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, Json

from billing import resource_names as names
from billing.audit.intake import drain_auth_failures
from billing.audit.keys import SecretsManagerKeyRing
from billing.audit.rotations import SecretsManagerVersions, record_rotations
from billing.audit.s3 import S3CheckpointStore
from billing.audit.sequencer import AuditCheckpointer
from billing.db.connection_provider import ConnectionProvider
from billing.db.roles import DatabaseRole


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
    return S3CheckpointStore(
        s3,
        bucket,
        retention=timedelta(days=names.AUDIT_CHECKPOINT_RETENTION_DAYS),
        require_object_lock=require_object_lock,
    )


class CheckpointRuntime:
    """The checkpointer, built once per container and reused while it is warm."""

    def __init__(self, settings: CheckpointSettings, connections: ConnectionProvider | None = None) -> None:
        self.settings = settings
        self.connections = connections or ConnectionProvider(role=DatabaseRole.WORKER)

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
        if self.settings.intake_queue_url is None:
            return 0
        return drain_auth_failures(self.connections.get(), self._clients[2], self.settings.intake_queue_url)

    def record_rotations(self) -> list[str]:
        """Audit every watched secret whose current version is new since the last run; their names."""
        versions = SecretsManagerVersions(self._clients[0])
        return record_rotations(self.connections.get(), versions, self.settings.watched_credentials)

    def checkpointer(self) -> AuditCheckpointer:
        keys = SecretsManagerKeyRing(self._clients[0], self.settings.key_secret_id)
        return AuditCheckpointer(self.connections.get(), keys, self.store)
