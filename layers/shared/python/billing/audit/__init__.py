"""The PCI DSS audit trail: an append-only log of audited events, kept as one RFC 6962 Merkle tree.

Callers record events with `record_audit_event(conn, AuditEvent(...))`. The rest of the package sequences entries
into the tree (sequencer), signs checkpoints of it (checkpoints, keys, s3), answers auditors (queries) and checks
everything again from the stored rows (verify, `python -m billing.audit verify`). merkle and leaf are pure.
docs/pci.md, "Audit trail", is the long form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome

if TYPE_CHECKING:
    from billing.audit.recorder import record_audit_event

__all__ = ["AuditEvent", "AuditEventType", "AuditOutcome", "record_audit_event"]


def __getattr__(name: str) -> Any:
    # The recorder brings psycopg: imported on first use, so that a function importing only the events (the
    # authorizer's audit lines, the API's query parameters) starts without the database driver.
    if name == "record_audit_event":
        from billing.audit.recorder import record_audit_event

        return record_audit_event
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
