"""Credential rotations as audit entries: Secrets Manager rotates secrets outside the engine, so the audit
checkpoint function notices each new current version and records it once (PCI DSS v4.0 10.2.1.2, 10.2.1.5)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.recorder import record_audit_event
from billing.db.connection import Connection
from billing.db.tenancy import apply_timeouts

ACTOR = "function:audit_checkpoint"

_PREVIOUS = """
select version_id from billing_audit.credential_versions where credential = %s order by observed_at desc limit 1
"""
_OBSERVE = """
insert into billing_audit.credential_versions (credential, version_id) values (%s, %s)
on conflict do nothing
returning version_id
"""


class CredentialVersions(Protocol):
    """Where a credential's current version is read (Secrets Manager in AWS, moto locally)."""

    def current_version(self, credential: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SecretsManagerVersions:
    """The AWSCURRENT version id of a Secrets Manager secret."""

    client: Any

    def current_version(self, credential: str) -> str | None:
        stages: Mapping[str, list[str]] = self.client.describe_secret(SecretId=credential).get("VersionIdsToStages", {})
        return next((version for version, labels in stages.items() if "AWSCURRENT" in labels), None)


def record_rotations(conn: Connection, versions: CredentialVersions, credentials: Iterable[str]) -> list[str]:
    """Record an audit entry for every watched credential whose current version was never seen; their names.

    The version is read before any transaction opens (no AWS call inside one); the first sight of a credential
    is recorded as well, so the trail says from which version on it was watched.
    """
    rotated = []
    for credential in credentials:
        version = versions.current_version(credential)
        if version is None:
            continue
        with conn.transaction():
            apply_timeouts(conn)
            row = conn.execute(_PREVIOUS, [credential]).fetchone()
            if conn.execute(_OBSERVE, [credential, version]).fetchone() is None:
                continue  # seen before: by an earlier run, or a concurrent one that committed first
            details = {"version_id": version, "previous_version_id": row["version_id"] if row else "none"}
            record_audit_event(
                conn,
                AuditEvent(
                    event_type=AuditEventType.SECRET_ROTATED,
                    outcome=AuditOutcome.SUCCEEDED,
                    actor=ACTOR,
                    tenant_id=None,
                    resource_type="secret",
                    resource_id=credential,
                    purpose="rotation_observed",
                    correlation_id=None,
                    source="secretsmanager",
                    details=details,
                ),
            )
        rotated.append(credential)
    return rotated
