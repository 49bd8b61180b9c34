"""An audit event as a structured log line, for the one caller without a database: the authorizer.

The bearer-token authorizer runs outside the VPC and has no database connection on purpose (short cold starts; and
a database write per rejected token would let anyone with a stream of garbage tokens load the database). PCI DSS
10.2.1.4 asks for invalid logical access attempts to be logged: each becomes an entry of the trail by way of the audit
intake queue (billing.audit.intake), and also one JSON line in its log group (CloudWatch Logs, retained like the trail,
10.5.1) with the same fields as an audit entry under the key `audit`.
Pure: the caller's logger writes the line.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from billing.audit.events import REQUIREMENTS, AuditEvent
from billing.audit.leaf import rfc3339_utc

LOG_KEY: Final = "audit"


def audit_log_fields(event: AuditEvent, occurred_at: datetime | None = None) -> dict[str, Any]:
    """The `audit` object of the log line (the fields of a billing_audit.entries row, minus what only the
    database states)."""
    return {
        "event_type": event.event_type.value,
        "outcome": event.outcome.value,
        "actor": event.actor,
        "tenant_id": None if event.tenant_id is None else str(event.tenant_id),
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "purpose": event.purpose,
        "correlation_id": event.correlation_id,
        "source": event.source,
        "details": dict(event.details),
        "occurred_at": rfc3339_utc(occurred_at or datetime.now(UTC)),
        "pci_dss": list(REQUIREMENTS[event.event_type]),
    }
