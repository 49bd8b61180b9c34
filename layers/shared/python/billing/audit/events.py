"""What an audit entry says: the event types (PCI DSS v4.0 10.2.1.x), outcomes and the event a caller records.

Pure: no psycopg, boto3 or Powertools. The database adds the entry id, the time (its own clock) and the login the
row came from; see sql/20261210_billing_audit_trail.sql.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final
from uuid import UUID


class AuditEventType(StrEnum):
    """Every kind of audited event; docs/pci.md maps each to its PCI DSS v4.0 sub-requirement (REQUIREMENTS)."""

    CARDHOLDER_DATA_TOKENIZED = "chd.tokenized"
    CARDHOLDER_DATA_DETOKENIZED = "chd.detokenized"
    INSTRUMENT_READ = "chd.instrument_read"
    INSTRUMENT_USED_IN_CHARGE = "chd.instrument_charged"
    INSTRUMENT_DEACTIVATED = "chd.instrument_deactivated"
    # 3-D Secure: an authentication value (CAVV/AAV) received from the ACS and spent on its one charge, or refused.
    AUTHENTICATION_VALUE_USED = "chd.authentication_value_used"
    AUTHENTICATION_FAILED = "auth.failed"
    WEBHOOK_SIGNATURE_REJECTED = "auth.webhook_signature_rejected"
    OPERATOR_ACTION = "admin.operator_action"
    KEY_ROTATED = "admin.key_rotated"
    SECRET_ROTATED = "admin.secret_rotated"  # noqa: S105 - an event type, not a secret
    MIGRATION_APPLIED = "admin.migration_applied"
    AUDIT_LOG_ACCESSED = "audit.accessed"


class AuditOutcome(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# PCI DSS v4.0 10.2.1: audit logs capture ...
#   10.2.1.1 all individual user access to cardholder data; 10.2.1.2 all actions by anyone with administrative
#   access; 10.2.1.3 all access to audit logs; 10.2.1.4 invalid logical access attempts; 10.2.1.5 changes to
#   identification and authentication credentials; 10.2.1.6 initialisation, stopping or pausing of the audit logs;
#   10.2.1.7 creation and deletion of system-level objects.
REQUIREMENTS: Final[Mapping[AuditEventType, tuple[str, ...]]] = MappingProxyType(
    {
        AuditEventType.CARDHOLDER_DATA_TOKENIZED: ("10.2.1.1",),
        AuditEventType.CARDHOLDER_DATA_DETOKENIZED: ("10.2.1.1",),
        AuditEventType.INSTRUMENT_READ: ("10.2.1.1",),
        AuditEventType.INSTRUMENT_USED_IN_CHARGE: ("10.2.1.1",),
        AuditEventType.INSTRUMENT_DEACTIVATED: ("10.2.1.1",),
        AuditEventType.AUTHENTICATION_VALUE_USED: ("10.2.1.1",),
        AuditEventType.AUTHENTICATION_FAILED: ("10.2.1.4",),
        AuditEventType.WEBHOOK_SIGNATURE_REJECTED: ("10.2.1.4",),
        AuditEventType.OPERATOR_ACTION: ("10.2.1.2",),
        AuditEventType.KEY_ROTATED: ("10.2.1.2", "10.2.1.5"),
        AuditEventType.SECRET_ROTATED: ("10.2.1.2", "10.2.1.5"),
        AuditEventType.MIGRATION_APPLIED: ("10.2.1.2", "10.2.1.6", "10.2.1.7"),
        AuditEventType.AUDIT_LOG_ACCESSED: ("10.2.1.3",),
    }
)

# Bounds the database enforces too (entries_* constraints): checked here first so a caller learns at once.
MAX_DETAILS: Final = 32
MAX_ACTOR_LENGTH: Final = 200
MAX_RESOURCE_TYPE_LENGTH: Final = 100
MAX_FIELD_LENGTH: Final = 200
MAX_PURPOSE_LENGTH: Final = 100


@dataclass(frozen=True)
class AuditEvent:
    """One audited event as its caller states it (PCI DSS 10.2.2: who, what, where from, outcome, which resource).

    `actor` is the user id from the request context or the function's identity ('function:execute'); `source` is
    the source IP or the function name; `details` is small and never holds cardholder data or secrets.
    """

    event_type: AuditEventType
    outcome: AuditOutcome
    actor: str
    tenant_id: UUID | None
    resource_type: str
    resource_id: str | None = None
    purpose: str | None = None
    correlation_id: str | None = None
    source: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < len(self.actor) <= MAX_ACTOR_LENGTH:
            raise ValueError(f"actor must be 1..{MAX_ACTOR_LENGTH} characters")
        if not 0 < len(self.resource_type) <= MAX_RESOURCE_TYPE_LENGTH:
            raise ValueError(f"resource_type must be 1..{MAX_RESOURCE_TYPE_LENGTH} characters")
        for name in ("resource_id", "correlation_id", "source"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_FIELD_LENGTH:
                raise ValueError(f"{name} must be at most {MAX_FIELD_LENGTH} characters")
        if self.purpose is not None and len(self.purpose) > MAX_PURPOSE_LENGTH:
            raise ValueError(f"purpose must be at most {MAX_PURPOSE_LENGTH} characters")
        if len(self.details) > MAX_DETAILS:
            raise ValueError(f"details holds at most {MAX_DETAILS} entries")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.details.items()):
            raise ValueError("details maps strings to strings")
