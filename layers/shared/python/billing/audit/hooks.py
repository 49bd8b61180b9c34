"""The audit events of today's non-card code paths, built in one place so their shape is the same everywhere:
webhook signature rejections, operator actions (DLQ redrive and purge, outbox replay) and applied migrations.
Pure builders; callers record them with record_audit_event in the transaction of what they record."""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome


def webhook_signature_rejected(
    provider: str, reason: str, *, correlation_id: str | None, source_ip: str | None
) -> AuditEvent:
    """A delivery whose signature did not verify (PCI DSS 10.2.1.4). Nothing of the body: nothing vouches for it."""
    return AuditEvent(
        AuditEventType.WEBHOOK_SIGNATURE_REJECTED,
        AuditOutcome.DENIED,
        # Who the delivery claims to be from: unverified, which is the point.
        actor=f"provider:{provider}"[:200],
        tenant_id=None,
        resource_type="webhook",
        resource_id=provider[:200],
        correlation_id=correlation_id,
        source=source_ip,
        details={"reason": reason[:200]},
    )


def operator_action(
    action: str,
    *,
    actor: str,
    resource_type: str,
    resource_id: str | None,
    outcome: AuditOutcome = AuditOutcome.SUCCEEDED,
    tenant_id: UUID | None = None,
    correlation_id: str | None = None,
    source: str | None = None,
    details: Mapping[str, str] | None = None,
) -> AuditEvent:
    """Something an operator did with administrative access (PCI DSS 10.2.1.2); `action` names it."""
    return AuditEvent(
        AuditEventType.OPERATOR_ACTION,
        outcome,
        actor=actor[:200],
        tenant_id=tenant_id,
        resource_type=resource_type,
        resource_id=resource_id,
        purpose=action,
        correlation_id=correlation_id,
        source=source,
        details={"action": action, **(details or {})},
    )


def migration_applied(version: str, checksum: str) -> AuditEvent:
    """A schema migration applied by the runner as billing_owner (PCI DSS 10.2.1.2, 10.2.1.7)."""
    return AuditEvent(
        AuditEventType.MIGRATION_APPLIED,
        AuditOutcome.SUCCEEDED,
        actor="function:migrate",
        tenant_id=None,
        resource_type="schema_migration",
        resource_id=version,
        source="billing.db.migrations",
        details={"checksum_sha256": checksum},
    )
